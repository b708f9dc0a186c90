"""Config section of an EMA (momentum) teacher, shared by every recipe that has one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .schedules import ConstantDecay, CosineDecay, LinearDecay

__all__ = ["EMAConfig"]


@dataclass
class EMAConfig:
    """Decay ``decay`` (``schedule = "constant"``), or annealed to ``final_decay`` over
    ``anneal_steps`` linearly or along a half cosine."""

    decay: float = 0.995
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    final_decay: float = 0.995
    anneal_steps: int = 0

    def check(self, p: str = "ema.") -> None:
        for name in ("decay", "final_decay"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"config field '{p}{name}' must lie in [0, 1], got {getattr(self, name)}")
        if self.anneal_steps < 0:
            raise ValueError(f"config field '{p}anneal_steps' must be >= 0, got {self.anneal_steps}")
        if self.schedule != "constant" and self.anneal_steps == 0:
            raise ValueError(f"config field '{p}anneal_steps' must be > 0 with {p}schedule={self.schedule!r}")

    def decay_schedule(self) -> ConstantDecay | LinearDecay | CosineDecay:
        """The :mod:`maskmm.teachers` schedule this section describes."""
        if self.schedule == "constant":
            return ConstantDecay(self.decay)
        cls = LinearDecay if self.schedule == "linear" else CosineDecay
        return cls(base=self.decay, final=self.final_decay, steps=self.anneal_steps)
