"""``flex`` backend: ``torch.nn.attention.flex_attention`` with a padding ``BlockMask``.

The block mask comes from :meth:`AttentionMask.flex_block_mask`: built once per batch (per
query length) and reused by every layer; key and query blocks that are entirely padding
are absent from it, so the kernel skips them.

On CUDA, ``flex_attention`` is compiled once per process (``torch.compile``, cached here)
and reused. On CPU it runs eagerly (un-fused, forward only: FlexAttention has no CPU
backward), so ``auto`` never picks it there; it exists on CPU to check mask conversions.
FlexAttention has no attention dropout: ``dropout_p > 0`` is declared unsupported.
Fully masked rows are zeros with zero gradient (zeroed after the call).
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .base import zero_invalid_rows

if TYPE_CHECKING:
    from ..mask import AttentionMask

__all__ = ["FlexBackend"]


@functools.lru_cache(maxsize=1)
def _flex() -> tuple[Any, str | None]:
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError as exc:
        return None, f"flex: torch {torch.__version__} has no FlexAttention ({exc})"
    return flex_attention, None


@functools.lru_cache(maxsize=1)
def _compiled_flex() -> Any:
    """``torch.compile(flex_attention)``, created once and shared by every call."""
    fn, _ = _flex()
    return torch.compile(fn, dynamic=False)


class FlexBackend:
    name = "flex"

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
        _, why = _flex()
        if why is not None:
            reasons.append(why)
        if dropout_p > 0.0:
            reasons.append(f"flex: FlexAttention has no attention dropout (dropout_p={dropout_p})")
        if q.device.type not in ("cuda", "cpu"):
            reasons.append(f"flex: unsupported device {q.device}")
        if q.device.type == "cpu" and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
            reasons.append("flex: FlexAttention has no backward on CPU (inputs require grad)")
        if q.device.type == "cuda":
            if q.shape[-1] < 16 or v.shape[-1] < 16:
                reasons.append(f"flex: head dims must be >= 16 on CUDA, got q {q.shape[-1]}, v {v.shape[-1]}")
            if q.dtype == torch.float64:
                reasons.append("flex: float64 is not supported by the compiled CUDA kernel")
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
        block_mask = None if mask is None else mask.flex_block_mask(q.shape[2])
        if q.device.type == "cuda":
            # inside an outer torch.compile the raw op is traced and compiled with the graph
            fn = _flex()[0] if torch.compiler.is_compiling() else _compiled_flex()
            out = fn(q, k, v, block_mask=block_mask, scale=scale)
        else:
            fn, _ = _flex()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
                out = fn(q, k, v, block_mask=block_mask, scale=scale)
        return zero_invalid_rows(out, mask)
