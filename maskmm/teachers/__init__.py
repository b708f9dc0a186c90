"""EMA (momentum) teachers and their decay schedules.

- :class:`EMATeacher`: a no-grad, eval-mode copy of a student (or of some of its
  submodules) updated by ``teacher.update(step)`` after each optimizer step.
- Schedules (pure functions of the step): :class:`ConstantDecay`,
  :class:`LinearDecay`, :class:`CosineDecay`, :class:`WarmupDecay`,
  :class:`CountWarmupDecay`, :class:`PowerWarmupDecay`.
"""

from __future__ import annotations

from .ema import EMATeacher, ema_update_
from .naming import canonical_name, unwrap_module
from .schedules import (
    ConstantDecay,
    CosineDecay,
    CountWarmupDecay,
    DecaySchedule,
    LinearDecay,
    PowerWarmupDecay,
    WarmupDecay,
    as_schedule,
)

__all__ = [
    "ConstantDecay",
    "CosineDecay",
    "CountWarmupDecay",
    "DecaySchedule",
    "EMATeacher",
    "LinearDecay",
    "PowerWarmupDecay",
    "WarmupDecay",
    "as_schedule",
    "canonical_name",
    "ema_update_",
    "unwrap_module",
]
