"""Shared internals of the masking strategies: counts, devices and per-row selection.

Counting rule used by every strategy (one place, so all agree): ``round(ratio * n)`` is rounded
half up, i.e. ``floor(ratio * n + 0.5)``; see :func:`num_to_mask` and :func:`counts_to_mask`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from maskmm._checks import check_generator

__all__ = [
    "counts_to_mask",
    "grid_of",
    "num_to_mask",
    "resolve_device",
    "select_per_row",
]


def num_to_mask(ratio: float, n: int, *, keep_one: bool = True) -> int:
    """Number of items to mask out of ``n``: ``floor(ratio * n + 0.5)`` (round half up).

    With ``keep_one`` (patches, pixel blocks) the count is capped at ``n - 1`` so at least one
    item stays visible; ``ratio = 0`` or ``n = 0`` gives 0.
    """
    if n <= 0:
        return 0
    k = math.floor(ratio * n + 0.5)
    if keep_one:
        k = min(k, n - 1)
    return max(0, min(k, n))


def counts_to_mask(ratio: float, n: torch.Tensor, *, at_least_one: bool) -> torch.Tensor:
    """Per-row counts ``floor(ratio * n + 0.5)`` for an integer tensor ``n`` (computed in float64).

    With ``at_least_one`` a row with ``n >= 1`` and ``ratio > 0`` gets at least one. Never more
    than ``n``. Returns ``long`` with the shape of ``n``; no host synchronisation.
    """
    n = n.to(torch.long)
    k = torch.floor(n.to(torch.float64) * ratio + 0.5).to(torch.long)
    if at_least_one and ratio > 0.0:
        k = torch.maximum(k, (n > 0).to(torch.long))
    return torch.minimum(k, n)


def resolve_device(
    device: torch.device | str | None, generator: torch.Generator | None, name: str = "generator"
) -> torch.device:
    """Device for freshly drawn masks: ``device``, else the generator's device, else the CPU."""
    if device is None:
        dev = generator.device if isinstance(generator, torch.Generator) else torch.device("cpu")
    else:
        if not isinstance(device, (str, torch.device)):
            raise TypeError(f"device must be a torch.device, str or None, got {type(device).__name__}")
        dev = torch.device(device)
    check_generator(name, generator, dev)
    return dev


def select_per_row(
    eligible: torch.Tensor, counts: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Choose exactly ``counts[b]`` entries of each row uniformly among ``eligible[b]``.

    Args:
        eligible: bool ``[B, M]``; entries that may be chosen.
        counts: long ``[B]``; must not exceed each row's number of eligible entries.
    Returns:
        bool ``[B, M]`` with ``counts[b]`` True entries in row ``b``, all of them eligible.

    Vectorised with the rank trick: eligible entries get a uniform score in ``[0, 1)``, the rest
    score 2; an entry is chosen iff its rank in ascending score order is below the row's count.
    """
    b, m = eligible.shape
    scores = torch.rand(b, m, generator=generator, device=eligible.device)
    scores = scores.masked_fill(~eligible, 2.0)
    order = scores.argsort(dim=1)
    ranks = torch.empty_like(order).scatter_(
        1, order, torch.arange(m, device=eligible.device).expand(b, m).contiguous()
    )
    return ranks < counts.unsqueeze(1)


def grid_of(images: Tensor, patch_size: int) -> tuple[int, int]:
    """Patch grid ``(H / p, W / p)`` of images ``[B, C, H, W]``; sizes must divide."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must have shape [B, C, H, W], got {list(images.shape)}")
    h, w = images.shape[-2:]
    if h % patch_size or w % patch_size:
        raise ValueError(f"images of size {h}x{w} are not divisible by patch_size={patch_size}")
    return h // patch_size, w // patch_size
