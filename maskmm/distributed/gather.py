"""Gathers across ranks with explicit gradient semantics.

All functions are the identity when ``torch.distributed`` is unavailable, not
initialised, or the group has a single rank, so the same code runs in one
process and under ``torchrun``.

Gradient semantics of :func:`all_gather_with_grad` (**sum**): every rank
computes its own loss, typically the *mean over its local rows* of a quantity
that uses the gathered ``[world * b, ...]`` batch (e.g. local queries against
global keys). The backward pass all-reduces (sums) the incoming gradient of
the gathered tensor over ranks and returns this rank's slice. The gradient of
rank ``r``'s input is then ``sum_r' dL_r' / dx_r``; DDP averages parameter
gradients over ranks (divides by ``world``), which yields exactly the gradient
of ``mean_r L_r``, i.e. the single-process loss on the concatenated batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from maskmm._checks import check_tensor

__all__ = ["all_gather_no_grad", "all_gather_with_grad", "world_info"]


def _active(group: dist.ProcessGroup | None = None) -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def world_info(group: dist.ProcessGroup | None = None) -> tuple[int, int]:
    """Return ``(rank, world_size)`` of ``group``; ``(0, 1)`` when not initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def _gather(x: Tensor, group: dist.ProcessGroup | None) -> Tensor:
    world = dist.get_world_size(group)
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x, group=group)
    return torch.cat(parts, dim=0)


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, group: dist.ProcessGroup | None) -> Tensor:
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        ctx.local = x.shape[0]
        return _gather(x, group)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        group, b = ctx.group, ctx.local
        grad = grad.clone(memory_format=torch.contiguous_format)
        if dist.get_backend(group) == "nccl":
            out = grad.new_empty((b, *grad.shape[1:]))
            dist.reduce_scatter_tensor(out, grad, op=dist.ReduceOp.SUM, group=group)
            return out, None
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=group)
        return grad[ctx.rank * b : (ctx.rank + 1) * b], None


def all_gather_with_grad(x: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """Concatenate ``x`` ``[b, ...]`` from every rank along dim 0 -> ``[world * b, ...]``, differentiably.

    Rank ``r``'s rows sit at ``[r * b, (r + 1) * b)``. Every rank must pass the
    same ``b``. The backward pass **sums** the gathered gradient over ranks and
    returns this rank's slice (see the module docstring: with per-rank local-mean
    losses and DDP gradient averaging this reproduces the single-process gradient).
    Identity when not distributed.
    """
    check_tensor("x", x)
    if x.dim() == 0:
        raise ValueError(f"x must have at least 1 dim (the batch), got shape {list(x.shape)}")
    if not _active(group):
        return x
    return _AllGatherWithGrad.apply(x, group)


def all_gather_no_grad(x: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """Concatenate ``x`` ``[b, ...]`` from every rank -> ``[world * b, ...]``, detached.

    The result carries no gradient. Identity (returns ``x.detach()``) when not distributed.
    """
    check_tensor("x", x)
    if x.dim() == 0:
        raise ValueError(f"x must have at least 1 dim (the batch), got shape {list(x.shape)}")
    if not _active(group):
        return x.detach()
    with torch.no_grad():
        return _gather(x.detach(), group)
