"""A linear ramp, shared by loss schedules (core) and the training loop."""

from __future__ import annotations


def linear_ramp(step: int, ramp_steps: int, final: float = 1.0, start: float = 0.0) -> float:
    """``start`` -> ``final`` linearly over ``ramp_steps`` steps (``final`` at once if 0)."""
    if ramp_steps <= 0:
        return final
    t = min(max(step, 0) / ramp_steps, 1.0)
    return start + (final - start) * t
