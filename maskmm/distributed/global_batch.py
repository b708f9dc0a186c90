"""Helpers that make per-rank computations add up to the computation on the global batch.

Under ``DistributedDataParallel`` every rank computes a loss on its local batch and DDP
**averages** the parameter gradients over ranks. Two things then differ from one process on the
concatenated (global) batch:

- Tensors that are gathered across ranks must have the same shape on every rank, but a collate
  that pads captions to the local longest one gives each rank its own length:
  :func:`pad_to_common_length` pads them to the longest length over ranks (one small
  all-reduce) and checks that every rank has the same batch size.
- A loss that is a mean over a data-dependent number of items (masked positions, scored pairs)
  is a mean over the *local* items; the average of those means is the global mean only when
  every rank has the same count. :func:`rescale_to_global_mean` rescales a local mean to
  ``local_sum * world / global_count``, whose average over ranks is exactly
  ``global_sum / global_count``.

Both are the identity in a single process (``torch.distributed`` unavailable, not initialised or
a group of one rank), so the same code runs in one process and under ``torchrun``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from maskmm._checks import check_tensor
from maskmm.distributed.gather import _active, world_info

__all__ = ["pad_to_common_length", "rescale_to_global_mean"]


def pad_to_common_length(
    tensors: Sequence[Tensor],
    values: Sequence[bool | int | float],
    *,
    group: dist.ProcessGroup | None = None,
) -> list[Tensor]:
    """Pad ``[B, L, ...]`` tensors along dim 1 to the largest ``L`` over the ranks of ``group``.

    One all-reduce (MAX) of ``(L, B, -B)`` finds the common length and checks that every rank has
    the same batch size (gathers need it); reading the result back is one host synchronisation.
    Padding appends ``values[i]`` to ``tensors[i]`` (e.g. the pad token id for ids, ``False`` for
    key validity), so a padded caption looks exactly as if the collate had padded it that far.

    Args:
        tensors: ``[B, L, ...]`` tensors sharing ``B`` and ``L`` (and the device).
        values: one fill value per tensor.
        group: process group (default: the world).

    Returns:
        The tensors padded to ``[B, L_max, ...]`` (the inputs themselves where ``L == L_max``, and
        in a single process).

    Raises:
        ValueError: the ranks have different batch sizes (the message names both extremes).
    """
    if isinstance(tensors, Tensor) or not isinstance(tensors, Sequence) or not tensors:
        raise TypeError("tensors must be a non-empty sequence of tensors")
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != len(tensors):
        raise ValueError(f"values must give one fill value per tensor ({len(tensors)}), got {values!r}")
    ref = check_tensor("tensors[0]", tensors[0])
    if ref.dim() < 2:
        raise ValueError(f"tensors[0] must have shape [B, L, ...], got {list(ref.shape)}")
    b, length = ref.shape[:2]
    for i, t in enumerate(tensors):
        check_tensor(f"tensors[{i}]", t, device=ref.device)
        if t.dim() < 2 or tuple(t.shape[:2]) != (b, length):
            raise ValueError(f"tensors[{i}] must have shape [{b}, {length}, ...], got {list(t.shape)}")
    if not _active(group):
        return list(tensors)
    info = torch.tensor([length, b, -b], dtype=torch.long, device=ref.device)
    dist.all_reduce(info, op=dist.ReduceOp.MAX, group=group)
    l_max, b_max, b_min = (int(v) for v in info.tolist())
    b_min = -b_min
    if b_min != b_max:
        raise ValueError(
            f"every rank must pass the same batch size, got sizes from {b_min} to {b_max} (this rank: {b})"
        )
    if l_max == length:
        return list(tensors)
    out = []
    for t, v in zip(tensors, values, strict=True):
        pad = t.new_full((b, l_max - length, *t.shape[2:]), v)
        out.append(torch.cat([t, pad], dim=1))
    return out


def rescale_to_global_mean(
    loss: Tensor,
    local_count: Tensor,
    global_count: Tensor | None = None,
    *,
    group: dist.ProcessGroup | None = None,
) -> Tensor:
    """Turn this rank's mean over ``local_count`` items into its share of the global mean.

    Returns ``loss * local_count * world / global_count``: for ``loss = local_sum / local_count``
    that is ``local_sum * world / global_count``, whose average over the ranks (what DDP does to
    gradients) is ``global_sum / global_count``, the loss of one process on the global batch.

    ``global_count`` (the number of items over all ranks) may be given when every rank knows it
    (e.g. masks drawn for the global batch); otherwise ``local_count`` is summed over ranks with
    one all-reduce (no host synchronisation). In a single process without ``global_count`` the loss
    is returned unchanged. A global count of 0 (then every local count is 0 and every loss is the
    graph-connected 0 of an empty mean) gives ``loss * 0``.

    Args:
        loss: scalar float tensor, a mean over ``local_count`` items.
        local_count: scalar count of this rank's items (any numeric dtype; no gradient).
        global_count: scalar count over all ranks, or ``None`` (all-reduced).
        group: process group (default: the world).

    Returns:
        Scalar, dtype of ``loss``.
    """
    check_tensor("loss", loss, shape=())
    if not loss.is_floating_point():
        raise TypeError(f"loss must be a floating-point tensor, got {loss.dtype}")
    check_tensor("local_count", local_count, shape=(), device=loss.device)
    if global_count is not None:
        check_tensor("global_count", global_count, shape=(), device=loss.device)
    _, world = world_info(group)
    if global_count is None:
        if not _active(group):
            return loss
        global_count = local_count.detach().to(torch.float64).clone()
        dist.all_reduce(global_count, op=dist.ReduceOp.SUM, group=group)
    local = local_count.detach().to(torch.float64)
    scale = local * world / global_count.detach().to(torch.float64).clamp(min=1.0)
    return loss * scale.to(loss.dtype)
