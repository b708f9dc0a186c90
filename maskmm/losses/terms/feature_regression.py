"""Feature regression term (MAMO's MIM): a decoder maps masked-patch states to teacher image features."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskmm._checks import check_bool
from maskmm.losses.latent import _check_config, latent_regression_loss
from maskmm.losses.types import LossOutput

from .base import LossTerm, patch_states, share_of_global_mean

__all__ = ["FeatureRegressionTerm"]


class FeatureRegressionTerm(LossTerm):
    """Regress the teacher image encoder's patch features at the masked patches (explicit target).

    Args:
        decoder: ``[B, N, D] -> [B, N, Dt]`` from the student's patch states to the teacher's width
            (e.g. ``maskmm.nn.PredictionDecoder``).
        kind, scale_by_dim, beta: the regression loss (:func:`~maskmm.losses.latent_regression_loss`).
        target_norm: layer-normalise the teacher features (over channels, no affine) first.

    ``forward(image_states [B, P + N, D], mask bool [B, N], *, teacher_image [B, P' + N, Dt],
    global_count=None)``: the ``N`` patch states (after any leading tokens such as CLS; the states of
    the whole grid, e.g. with mask tokens at the masked patches) are decoded and scored at the masked
    patches against the teacher's features of the clean image (in fp32 at least). ``global_count``:
    masked patches over all ranks, or ``None`` (all-reduced when distributed); the loss is this
    rank's share of the mean over all ranks' masked patches. Stats: ``pred_var``, ``target_var``,
    ``num_masked``.
    """

    def __init__(
        self,
        decoder: nn.Module,
        *,
        kind: Literal["smooth_l1", "mse", "cosine"] = "smooth_l1",
        target_norm: bool = True,
        scale_by_dim: bool = True,
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        if not callable(decoder):
            raise TypeError(f"decoder must be a module [B, N, D] -> [B, N, Dt], got {type(decoder).__name__}")
        self.beta = _check_config(kind, scale_by_dim, beta, True)
        self.decoder = decoder
        self.kind = kind
        self.target_norm = check_bool("target_norm", target_norm)
        self.scale_by_dim = scale_by_dim

    def teacher_reads(self, alpha: float = 0.0) -> frozenset[str]:
        return frozenset({"teacher_image"})

    def forward(
        self, image_states: Tensor, mask: Tensor, *, teacher_image: Tensor, global_count: Tensor | None = None
    ) -> LossOutput:
        if teacher_image is None:
            raise ValueError("teacher_image (the teacher's image states of the clean image) is required")
        n = mask.shape[1]
        pred = self.decoder(patch_states(image_states, n))
        target = patch_states(teacher_image, n)
        target = target.to(torch.promote_types(target.dtype, torch.float32))  # at least fp32
        if self.target_norm:
            target = F.layer_norm(target, target.shape[-1:])
        out = latent_regression_loss(
            pred, target, mask, kind=self.kind, scale_by_dim=self.scale_by_dim, beta=self.beta
        )
        return share_of_global_mean(out, out.stats["num_masked"], global_count)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, target_norm={self.target_norm}, scale_by_dim={self.scale_by_dim}"
