"""``reference`` backend: the plain-PyTorch definition (``maskmm.kernels.attention``).

Runs anywhere, in float32 (float64 for float64 inputs), materialising ``[B, H, Lq, Lk]``
scores. Dropout draws a keep-mask ``rand(B, H, Lq, Lk) >= dropout_p`` from ``generator``
(or the global generator), so a seeded generator reproduces the output exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ..mask import AttentionMask

__all__ = ["ReferenceBackend", "dropout_keep_mask"]


def dropout_keep_mask(q: Tensor, k: Tensor, dropout_p: float, generator: torch.Generator | None) -> Tensor:
    """``bool [B, H, Lq, Lk]``, ``True`` = kept with probability ``1 - dropout_p``."""
    b, h, lq, _ = q.shape
    lk = k.shape[2]
    return torch.rand(b, h, lq, lk, generator=generator, device=q.device) >= dropout_p


class ReferenceBackend:
    name = "reference"

    def unsupported_reasons(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: AttentionMask | None,
        dropout_p: float,
        *,
        scale: float | None,
        generator: torch.Generator | None,
    ) -> list[str]:
        return []

    def __call__(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: AttentionMask | None,
        *,
        dropout_p: float,
        scale: float | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        from maskmm.kernels.attention import attention_reference

        keep = dropout_keep_mask(q, k, dropout_p, generator) if dropout_p > 0.0 else None
        return attention_reference(
            q,
            k,
            v,
            key_valid=None if mask is None else mask.key_valid,
            query_valid=None if mask is None else mask.query_valid,
            scale=scale,
            dropout_p=dropout_p,
            dropout_mask=keep,
        )
