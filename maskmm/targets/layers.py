"""Top-K layer-average targets (data2vec style), used for MAMO's implicit MRM target.

The teacher sees the unmasked input; its last ``k`` layer outputs are each
normalised, averaged, and optionally normalised once more. The result is a
detached fp32 target ``[B, L, D]`` that the loss compares at masked positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from maskmm._checks import check_choice, check_floating, check_int, check_positive_float, check_same_device

from ._common import (
    check_valid,
    instance_norm_tokens,
    layer_norm_features,
)

__all__ = ["TopKLayerTargets", "top_k_layer_targets"]

NormKind = Literal["instance", "layer", "none"]
_NORMS = ("instance", "layer", "none")


def _normalise(x: torch.Tensor, kind: str, eps: float, valid: torch.Tensor | None) -> torch.Tensor:
    if kind == "instance":
        return instance_norm_tokens(x, eps, valid)
    x = layer_norm_features(x, eps) if kind == "layer" else x.float()
    if valid is not None:
        x = x * valid.unsqueeze(-1)
    return x


def top_k_layer_targets(
    layers: Sequence[torch.Tensor],
    k: int,
    *,
    layer_norm: NormKind = "instance",
    final_norm: NormKind = "none",
    eps: float = 1e-5,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Average of the top ``k`` layers, each normalised, then an optional final norm.

    Args:
        layers: layer outputs ``[B, L, D]``, ordered bottom to top (the last
            ``k`` are used); fp32/fp16/bf16.
        k: how many of the top layers to average, ``1 <= k <= len(layers)``.
        layer_norm: per-layer normalisation: ``"instance"`` (over the token axis
            per sample and channel, biased variance, as data2vec), ``"layer"``
            (over ``D``, no affine) or ``"none"``.
        final_norm: the same choices, applied to the average (default ``"none"``).
        eps: added to the variance.
        valid: optional bool ``[B, L]``, True = real token. Instance-norm
            statistics then use valid tokens only, and invalid tokens come out as
            0 (a row with no valid token is all 0).

    Returns:
        fp32 ``[B, L, D]``, detached (computed under ``no_grad``).
    """
    if isinstance(layers, torch.Tensor) or not isinstance(layers, (list, tuple)):
        raise TypeError(f"layers must be a list or tuple of [B, L, D] tensors, got {type(layers).__name__}")
    if len(layers) == 0:
        raise ValueError("layers must hold at least one [B, L, D] tensor, got an empty sequence")
    first = check_floating("layers[0]", layers[0], ndim=3)
    for i, layer in enumerate(layers[1:], start=1):
        check_floating(f"layers[{i}]", layer, shape=tuple(first.shape))
        check_same_device(**{"layers[0]": first, f"layers[{i}]": layer})
    k = check_int("k", k, minimum=1)
    if k > len(layers):
        raise ValueError(f"k must be <= len(layers) = {len(layers)}, got {k}")
    check_choice("layer_norm", layer_norm, _NORMS)
    check_choice("final_norm", final_norm, _NORMS)
    eps = check_positive_float("eps", eps)
    b, length, _ = first.shape
    valid = check_valid("valid", valid, b, length, first.device)

    with torch.no_grad():
        total = None
        for layer in layers[len(layers) - k :]:
            y = _normalise(layer.detach(), layer_norm, eps, valid)
            total = y if total is None else total + y  # out of place: y may alias the input
        assert total is not None
        out = total / k
        if final_norm != "none":
            out = _normalise(out, final_norm, eps, valid)
    return out


class TopKLayerTargets(nn.Module):
    """Module form of :func:`top_k_layer_targets` (no parameters)."""

    def __init__(
        self, k: int, *, layer_norm: NormKind = "instance", final_norm: NormKind = "none", eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.k = check_int("k", k, minimum=1)
        self.layer_norm = check_choice("layer_norm", layer_norm, _NORMS)
        self.final_norm = check_choice("final_norm", final_norm, _NORMS)
        self.eps = check_positive_float("eps", eps)

    def forward(self, layers: Sequence[torch.Tensor], valid: torch.Tensor | None = None) -> torch.Tensor:
        """``layers``: ``[B, L, D]`` each, bottom to top -> fp32 ``[B, L, D]`` (detached)."""
        return top_k_layer_targets(
            layers, self.k, layer_norm=self.layer_norm, final_norm=self.final_norm, eps=self.eps, valid=valid
        )

    def extra_repr(self) -> str:
        return f"k={self.k}, layer_norm={self.layer_norm!r}, final_norm={self.final_norm!r}, eps={self.eps}"
