"""Pixel reconstruction term (MAE / MaskVLM): predicted pixels of the masked regions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import Tensor

from maskmm.losses.pixel import _check_config, pixel_reconstruction_loss
from maskmm.losses.types import LossOutput

from .base import LossTerm, patch_states, share_of_global_mean

__all__ = ["PixelReconstructionTerm"]


class PixelReconstructionTerm(LossTerm):
    """L1 / MSE of reconstructed pixels at the masked regions
    (:func:`~maskmm.losses.pixel_reconstruction_loss`).

    Args:
        decoder: optional module from the input of ``forward`` to the predicted pixels (``None``: the
            input is the prediction).
        kind: ``"l1"`` or ``"mse"``.
        layout: ``"patch"``: prediction and target ``[B, N, P]`` patchified pixels, mask ``[B, N]``
            (the input may carry leading tokens such as CLS before its ``N`` patch rows; they are
            dropped before the decoder); ``"pixel"``: ``[B, C, H, W]`` with a ``[B, H, W]`` mask.
        normalize_target: normalise each target patch (MAE's ``norm_pix_loss``; patch layout only).

    ``forward(x, target, mask, *, global_count=None)``: ``target`` the pixels (e.g.
    ``maskmm.targets.pixel_targets`` or the image itself), constant. ``global_count``: masked
    regions (patches or pixels) over all ranks, or ``None`` (all-reduced when distributed); the loss
    is this rank's share of the mean over all ranks' masked regions. Stats: ``num_masked``, ``pred_std``.
    """

    def __init__(
        self,
        decoder: Callable[[Tensor], Tensor] | None = None,
        *,
        kind: Literal["l1", "mse"] = "l1",
        layout: Literal["patch", "pixel"] = "patch",
        normalize_target: bool = False,
    ) -> None:
        super().__init__()
        if decoder is not None and not callable(decoder):
            raise TypeError(f"decoder must be a module or None, got {type(decoder).__name__}")
        _check_config(kind, layout, normalize_target, 1e-6)
        self.decoder = decoder
        self.kind = kind
        self.layout = layout
        self.normalize_target = normalize_target

    def forward(
        self, x: Tensor, target: Tensor, mask: Tensor, *, global_count: Tensor | None = None
    ) -> LossOutput:
        if self.layout == "patch":
            x = patch_states(x, mask.shape[1])
        pred = self.decoder(x) if self.decoder is not None else x
        out = pixel_reconstruction_loss(
            pred, target, mask, kind=self.kind, layout=self.layout, normalize_target=self.normalize_target
        )
        return share_of_global_mean(out, out.stats["num_masked"], global_count)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, layout={self.layout!r}, normalize_target={self.normalize_target}"
