"""Fusion-state regression term (MAMO's MRM): top-K teacher fusion layers at masked positions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import torch
from torch import Tensor, nn

from maskmm.losses.latent import _check_config, latent_regression_loss
from maskmm.losses.types import LossOutput

from .base import LossTerm, patch_states, share_of_global_mean

__all__ = ["FusionRegressionTerm", "FusionStates"]


class FusionStates(Protocol):
    """States of a fusion encoder (or of one of its layers): ``text [B, Lt, D]`` and ``image
    [B, P + N, D]``, or ``None`` for a fusion that updates text tokens only (``maskmm.nn``'s
    ``FusionOutput`` / ``FusionLayerState``)."""

    text: Tensor
    image: Tensor | None


#: ``targets(layers, valid) -> fp32 [B, L, D]``: the target of each position from the teacher's
#: layer states (bottom to top), e.g. ``maskmm.targets.TopKLayerTargets``.
LayerTargets = Callable[[Sequence[Tensor], Tensor], Tensor]


class FusionRegressionTerm(LossTerm):
    """The student's fusion states at masked image *and* text positions regress a target built from
    the teacher's fusion layers on the clean pair (MAMO's implicit target, data2vec style).

    Args:
        head: regression head ``[B, L, D] -> [B, L, D']`` on the student's fusion states.
        targets: :data:`LayerTargets` (e.g. ``maskmm.targets.TopKLayerTargets(k, layer_norm=...,
            final_norm=...)``: the mean of the normalised layers given, to which the teacher pass is
            restricted). Passed in because ``maskmm.losses`` does not depend on ``maskmm.targets``.
        kind, scale_by_dim, beta: the regression loss (:func:`~maskmm.losses.latent_regression_loss`).

    ``forward(fused, image_mask bool [B, N], text_mask bool [B, Lt], text_valid bool [B, Lt], *,
    teacher_layers, global_counts=None)``: ``fused`` (:class:`FusionStates`) the student's fusion
    output on the masked pair and ``teacher_layers`` the teacher's layer states on the clean pair.
    With image states the scored sequence is ``[N patches; Lt text tokens]`` (any leading image
    tokens such as CLS, before the ``N`` patches the mask covers, are left out); for a fusion without
    image states (``fused.image is None``, cross-attention) only the text positions are scored. Patch
    positions count as valid for the targets, text positions as ``text_valid`` says.
    ``global_counts``: ``(masked patches, masked tokens)`` over all ranks (e.g. masks drawn for the
    global batch), or ``None`` (all-reduced when distributed); the loss is this rank's share of the
    mean over all ranks' scored positions. Stats: ``pred_var``, ``target_var``, ``num_masked``.
    """

    def __init__(
        self,
        head: nn.Module,
        targets: LayerTargets,
        *,
        kind: Literal["smooth_l1", "mse", "cosine"] = "smooth_l1",
        scale_by_dim: bool = True,
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        for name, part in (("head", head), ("targets", targets)):
            if not callable(part):
                raise TypeError(f"{name} must be callable, got {type(part).__name__}")
        self.beta = _check_config(kind, scale_by_dim, beta, True)
        self.head = head
        self.targets = targets
        self.kind = kind
        self.scale_by_dim = scale_by_dim

    def teacher_reads(self, alpha: float = 0.0) -> frozenset[str]:
        return frozenset({"teacher_layers"})

    def forward(
        self,
        fused: FusionStates,
        image_mask: Tensor,
        text_mask: Tensor,
        text_valid: Tensor,
        *,
        teacher_layers: Sequence[FusionStates],
        global_counts: tuple[Tensor, Tensor] | None = None,
    ) -> LossOutput:
        if teacher_layers is None or len(teacher_layers) == 0:
            raise ValueError("teacher_layers must hold the teacher's fusion layer states (at least one)")
        n = image_mask.shape[1]
        if fused.image is None:  # text-only fusion: score the text positions
            layers = [h.text for h in teacher_layers]
            states, mask, valid = fused.text, text_mask, text_valid
        else:
            layers = [torch.cat([patch_states(h.image, n), h.text], dim=1) for h in teacher_layers]
            states = torch.cat([patch_states(fused.image, n), fused.text], dim=1)
            mask = torch.cat([image_mask, text_mask], dim=1)
            valid = torch.cat([torch.ones_like(image_mask), text_valid], dim=1)
        target = self.targets(layers, valid)
        pred = self.head(states)
        out = latent_regression_loss(
            pred, target, mask, kind=self.kind, scale_by_dim=self.scale_by_dim, beta=self.beta
        )
        total = None
        if global_counts is not None:
            total = global_counts[1] if fused.image is None else global_counts[0] + global_counts[1]
        return share_of_global_mean(out, out.stats["num_masked"], total)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, scale_by_dim={self.scale_by_dim}, beta={self.beta}"
