"""``sdpa`` backend: ``torch.nn.functional.scaled_dot_product_attention`` on any device.

Masking uses the cached boolean mask :meth:`AttentionMask.sdpa_mask` (``[B, 1, 1, Lk]``,
broadcast over heads and queries, so SDPA's memory-efficient / cuDNN kernels can take it).
SDPA turns an all-``False`` row into NaN (or uniform attention), so a sample without any
valid key attends to key 0 instead, and afterwards every invalid row (no valid key, or an
invalid query) is zeroed with ``masked_fill``: zero output, zero gradient, no NaN.

Dropout uses SDPA's own dropout. Without ``generator`` it follows the global RNG (a fixed
``torch.manual_seed`` reproduces it). With ``generator``, a seed is drawn from it and the
device's default generator is temporarily re-seeded around the call (forked and restored),
which makes the output a deterministic function of the generator's state; for a CUDA
generator this costs one host sync and, under ``torch.compile``, a graph break.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import run_seeded, zero_invalid_rows

if TYPE_CHECKING:
    from ..mask import AttentionMask

__all__ = ["SdpaBackend"]


class SdpaBackend:
    name = "sdpa"

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
        reasons = []
        if dropout_p > 0.0 and generator is not None and q.device.type not in ("cpu", "cuda"):
            reasons.append(f"sdpa: seeded dropout (generator) is only supported on cpu/cuda, got {q.device}")
        return reasons

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
        attn_mask = None if mask is None else mask.sdpa_mask()

        def run() -> Tensor:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale
            )

        return zero_invalid_rows(run_seeded(run, dropout_p, generator, q.device), mask)
