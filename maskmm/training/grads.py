"""Gradient accumulation and clipping helpers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["clip_grad_norm", "split_microbatches"]


def clip_grad_norm(params: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Global L2 gradient norm before clipping (fp32 0-dim tensor, no host sync).

    Clips the gradients to ``max_norm`` in place when it is > 0. Parameters without a
    gradient are skipped; with none at all the norm is a zero on the parameters' device.
    """
    params = list(params)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device if params else None)
    norm = torch.nn.utils.get_total_norm(grads, foreach=True)
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm, foreach=True)
    return norm.float()


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
