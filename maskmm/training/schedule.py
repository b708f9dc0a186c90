"""Learning-rate and coefficient schedules as pure functions of the step."""

from __future__ import annotations

import math

import torch

from maskmm._ramp import linear_ramp

__all__ = ["linear_ramp", "warmup_cosine", "warmup_cosine_scheduler"]


def warmup_cosine(step: int, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based).

    Linear warm-up from ``1/warmup_steps`` to 1 over ``warmup_steps`` steps, then a half
    cosine from 1 down to ``min_ratio`` at ``total_steps``; constant ``min_ratio`` after.
    """
    if total_steps < 0 or warmup_steps < 0:
        raise ValueError(f"total_steps and warmup_steps must be >= 0, got {total_steps}, {warmup_steps}")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio must lie in [0, 1], got {min_ratio}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` applying :func:`warmup_cosine` to every group's initial learning rate."""
    warmup_cosine(0, total_steps, warmup_steps, min_ratio)  # validate eagerly
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total_steps, warmup_steps, min_ratio)
    )
