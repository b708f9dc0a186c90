"""``MaskedAttention``: a thin ``nn.Module`` around :func:`masked_attention` (no parameters)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from maskmm._checks import check_ratio

from .dispatch import _check_backend, masked_attention
from .mask import AttentionMask

__all__ = ["MaskedAttention"]


class MaskedAttention(nn.Module):
    """Core attention ``[B, H, Lq, D] x [B, H, Lk, D] x [B, H, Lk, Dv] -> [B, H, Lq, Dv]``.

    Applies ``dropout_p`` only in training mode. Projections belong to the caller.
    """

    def __init__(self, *, dropout_p: float = 0.0, scale: float | None = None, backend: str = "auto") -> None:
        super().__init__()
        self.dropout_p = check_ratio("dropout_p", dropout_p)
        self.scale = scale
        self.backend = _check_backend(backend)

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: AttentionMask | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return masked_attention(
            q,
            k,
            v,
            mask,
            dropout_p=self.dropout_p if self.training else 0.0,
            scale=self.scale,
            backend=self.backend,
            generator=generator,
        )

    def extra_repr(self) -> str:
        return f"dropout_p={self.dropout_p}, scale={self.scale}, backend={self.backend!r}"
