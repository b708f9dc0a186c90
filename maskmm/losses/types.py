"""The value every maskmm loss returns."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["LossOutput"]


class LossOutput(NamedTuple):
    """A loss and the quantities worth logging with it.

    Attributes:
        loss: fp32 scalar (fp64 when the inputs are fp64), differentiable.
        stats: detached fp32 scalars (accuracy, variances, temperature, counts, ...).
            They stay on the loss's device; reading them (``.item()``) is the caller's
            choice, so computing a loss never synchronises with the host.
    """

    loss: Tensor
    stats: dict[str, Tensor]


def _acc_dtype(*tensors: Tensor | None) -> torch.dtype:
    """Accumulation dtype: fp32 for fp32/fp16/bf16 inputs, fp64 when any input is fp64."""
    dt = torch.float32
    for t in tensors:
        if t is not None:
            dt = torch.promote_types(dt, t.dtype)
    return dt


def _stat(x: Tensor) -> Tensor:
    """Detach and cast a scalar statistic to fp32."""
    return x.detach().to(torch.float32)


def _masked_mean(values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of ``values`` over ``mask``; 0 (graph-connected, zero gradient) when nothing is selected.

    Returns ``(mean, count)``; ``count`` is an fp32 tensor. ``torch.where`` (not a
    product) keeps non-finite values at unselected positions out of the result.
    """
    count = mask.sum().to(torch.float32)
    total = torch.where(mask, values, values.new_zeros(())).sum()
    return total / count.clamp(min=1.0), count
