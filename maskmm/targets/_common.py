"""Shared utilities of :mod:`maskmm.targets` (validation and fp32 normalisations)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maskmm._checks import check_tensor

__all__ = ["check_valid", "instance_norm_tokens", "layer_norm_features"]


def check_valid(
    name: str, valid: object, batch: int, length: int, device: torch.device
) -> torch.Tensor | None:
    if valid is None:
        return None
    v = check_tensor(name, valid, shape=(batch, length), dtype=torch.bool)
    if v.device != device:
        raise ValueError(
            f"{name} is on {v.device} but the features are on {device}; they must share a device"
        )
    return v


def layer_norm_features(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Normalise over the last axis (no affine), in fp32."""
    x = x.float()
    return F.layer_norm(x, (x.shape[-1],), eps=eps)


def instance_norm_tokens(x: torch.Tensor, eps: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Normalise ``x [B, L, D]`` over the token axis per (sample, channel), in fp32.

    Biased variance. With ``valid`` (bool ``[B, L]``) the statistics use valid
    tokens only and invalid tokens come out as 0; a row with no valid token is 0.
    """
    x = x.float()
    if valid is None:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, unbiased=False, keepdim=True)
        return (x - mean) * torch.rsqrt(var + eps)
    w = valid.unsqueeze(-1).to(x.dtype)
    count = w.sum(dim=1, keepdim=True).clamp_min(1.0)
    mean = (x * w).sum(dim=1, keepdim=True) / count
    centred = (x - mean) * w
    var = centred.square().sum(dim=1, keepdim=True) / count
    return centred * torch.rsqrt(var + eps)
