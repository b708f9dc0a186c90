"""Gradient accumulation and clipping helpers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["clip_grad_norm", "split_microbatches"]


def clip_grad_norm(params: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Global L2 gradient norm (fp32 tensor, no host sync); clip to ``max_norm`` when it is > 0."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return torch.zeros(())
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True).float()
    norms = torch._foreach_norm([p.grad for p in params])
    return torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))


def split_microbatches(batch: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Split every tensor of ``batch`` along dim 0 into ``n`` equal micro-batches.

    Non-tensor values (and 0-dim tensors) are shared by all micro-batches. The batch size
    must be divisible by ``n``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n == 1:
        return [batch]
    sizes = {v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor) and v.dim() > 0}
    if len(sizes) > 1:
        raise ValueError(f"batch tensors disagree on the batch size: {sorted(sizes)}")
    size = sizes.pop() if sizes else 0
    if size % n:
        raise ValueError(f"batch size {size} is not divisible by the number of micro-batches {n}")
    step = size // n
    out = []
    for i in range(n):
        out.append(
            {
                k: v[i * step : (i + 1) * step] if isinstance(v, torch.Tensor) and v.dim() > 0 else v
                for k, v in batch.items()
            }
        )
    return out
