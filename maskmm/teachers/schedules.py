"""EMA decay schedules: pure functions of the training step.

A schedule maps a step (``int >= 0``: the 0-based index of the optimizer step just
taken, so the first update after the first optimizer step passes ``0``) to a decay
``m`` in ``[0, 1]``; the teacher update is ``teacher = m * teacher +
(1 - m) * student``. ``m = 1`` freezes the teacher, ``m = 0`` copies the student.

Every schedule here is a frozen dataclass: it holds no state, validates its
parameters at construction, and ``schedule(step)`` always gives the same value
for the same step, so resuming from a checkpoint needs only the step.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

from maskmm._checks import check_positive_float, check_ratio

__all__ = [
    "ConstantDecay",
    "CosineDecay",
    "CountWarmupDecay",
    "DecaySchedule",
    "LinearDecay",
    "PowerWarmupDecay",
    "WarmupDecay",
    "as_schedule",
    "check_step",
]


def check_step(name: str, step: object) -> int:
    """Validate a training step (a non-negative integer) and return it as ``int``."""
    if isinstance(step, bool):
        raise TypeError(f"{name} must be a non-negative int, got bool")
    try:
        value = operator.index(step)
    except TypeError:
        raise TypeError(f"{name} must be a non-negative int, got {type(step).__name__}") from None
    if value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value}")
    return value


def _check_unit(name: str, value: object) -> float:
    return check_ratio(name, value, allow_one=True)


class DecaySchedule:
    """Base class of decay schedules: ``schedule(step) -> float`` in ``[0, 1]``."""

    def __call__(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class ConstantDecay(DecaySchedule):
    """``m(step) = value`` for every step (MAMO / ALBEF default: 0.995)."""

    value: float = 0.995

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _check_unit("value", self.value))

    def __call__(self, step: int) -> float:
        check_step("step", step)
        return self.value


@dataclass(frozen=True)
class _AnnealDecay(DecaySchedule):
    """From ``base`` (step 0) to ``final`` (step ``steps`` and after) along ``_progress``."""

    base: float
    final: float
    steps: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", _check_unit("base", self.base))
        object.__setattr__(self, "final", _check_unit("final", self.final))
        object.__setattr__(self, "steps", check_step("steps", self.steps))

    @staticmethod
    def _progress(t: float) -> float:  # pragma: no cover - abstract
        """Fraction of the way from ``base`` to ``final`` at ``t = step / steps`` in ``[0, 1)``."""
        raise NotImplementedError

    def __call__(self, step: int) -> float:
        step = check_step("step", step)
        if step >= self.steps:
            return self.final
        value = self.base + (self.final - self.base) * self._progress(step / self.steps)
        return min(1.0, max(0.0, value))


@dataclass(frozen=True)
class LinearDecay(_AnnealDecay):
    """Linear anneal from ``base`` (step 0) to ``final`` (step ``steps`` and after).

    ``m(step) = base + (final - base) * min(step / steps, 1)``; ``steps = 0`` gives
    ``final`` from step 0 (data2vec anneals its EMA decay this way).
    """

    @staticmethod
    def _progress(t: float) -> float:
        return t


@dataclass(frozen=True)
class CosineDecay(_AnnealDecay):
    """Half-cosine from ``base`` (step 0) to ``final`` (step ``steps`` and after).

    ``m(step) = final + (base - final) * (1 + cos(pi * min(step, steps) / steps)) / 2``;
    with ``final = 1`` this is the BYOL / DINO momentum schedule.
    """

    final: float = 1.0
    steps: int = 1

    @staticmethod
    def _progress(t: float) -> float:
        return 0.5 * (1.0 - math.cos(math.pi * t))


@dataclass(frozen=True)
class WarmupDecay(DecaySchedule):
    """``warmup_value`` for the first ``warmup_steps`` updates, then ``schedule``.

    ``m(step) = warmup_value`` for ``step < warmup_steps`` (steps ``0 .. warmup_steps - 1``),
    else ``schedule(step - warmup_steps)`` with ``shift=True`` (default: the wrapped
    schedule starts at its own step 0 when the warm-up ends) or ``schedule(step)``
    with ``shift=False``. The default ``warmup_value = 0`` makes the teacher a copy of
    the student during the warm-up (it follows the fast early changes exactly);
    ``warmup_steps = 0`` is the wrapped schedule itself.
    """

    schedule: DecaySchedule | float
    warmup_steps: int
    warmup_value: float = 0.0
    shift: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedule", as_schedule(self.schedule))
        object.__setattr__(self, "warmup_steps", check_step("warmup_steps", self.warmup_steps))
        object.__setattr__(self, "warmup_value", _check_unit("warmup_value", self.warmup_value))

    def __call__(self, step: int) -> float:
        step = check_step("step", step)
        if step < self.warmup_steps:
            return self.warmup_value
        inner = step - self.warmup_steps if self.shift else step
        return self.schedule(inner)


@dataclass(frozen=True)
class CountWarmupDecay(DecaySchedule):
    """Update-count warm-up: ``m(step) = min(max_decay, (1 + step) / (offset + step))``.

    Starts at ``1 / offset`` and rises towards 1, capped at ``max_decay``: early
    teachers follow the student closely while it changes fast.
    """

    max_decay: float = 0.9999
    offset: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_decay", _check_unit("max_decay", self.max_decay))
        offset = check_positive_float("offset", self.offset)
        if offset < 1.0:
            raise ValueError(f"offset must be >= 1 so the decay stays in [0, 1], got {self.offset}")
        object.__setattr__(self, "offset", offset)

    def __call__(self, step: int) -> float:
        step = check_step("step", step)
        return min(self.max_decay, (1.0 + step) / (self.offset + step))


@dataclass(frozen=True)
class PowerWarmupDecay(DecaySchedule):
    """Power-law warm-up: ``m(step) = clamp(1 - (1 + step / gamma) ** -power, min_decay, max_decay)``.

    ``m(0) = 0`` (before clamping); ``gamma = 1, power = 3/4`` reaches 0.999 after
    about 10k steps, ``power = 2/3`` reaches 0.9999 after about 1M steps.
    """

    max_decay: float = 0.9999
    gamma: float = 1.0
    power: float = 0.75
    min_decay: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_decay", _check_unit("max_decay", self.max_decay))
        object.__setattr__(self, "min_decay", _check_unit("min_decay", self.min_decay))
        object.__setattr__(self, "gamma", check_positive_float("gamma", self.gamma))
        object.__setattr__(self, "power", check_positive_float("power", self.power))
        if self.min_decay > self.max_decay:
            raise ValueError(f"min_decay ({self.min_decay}) must not exceed max_decay ({self.max_decay})")

    def __call__(self, step: int) -> float:
        step = check_step("step", step)
        value = 1.0 - (1.0 + step / self.gamma) ** -self.power
        return min(self.max_decay, max(self.min_decay, value))


def as_schedule(
    decay: DecaySchedule | float | Callable[[int], float],
) -> DecaySchedule | Callable[[int], float]:
    """Turn a float into :class:`ConstantDecay`; pass schedules and callables through.

    Raises:
        TypeError: ``decay`` is neither a number nor callable.
        ValueError: a number outside ``[0, 1]``.
    """
    if isinstance(decay, DecaySchedule):
        return decay
    if isinstance(decay, (int, float)) and not isinstance(decay, bool):
        return ConstantDecay(_check_unit("decay", decay))
    if callable(decay):
        return decay
    raise TypeError(
        f"decay must be a float in [0, 1] or a schedule (callable step -> float), got {type(decay).__name__}"
    )


def evaluate_schedule(schedule: Callable[[int], float], step: int, *, name: str = "decay") -> float:
    """Evaluate ``schedule(step)`` and check the result is a float in ``[0, 1]``."""
    value = schedule(step)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} schedule must return a float, got {type(value).__name__} at step {step}")
    v = float(value)
    if not (0.0 <= v <= 1.0):
        raise ValueError(f"{name} schedule returned {value} at step {step}; expected a value in [0, 1]")
    return v
