"""Config sections of the contrastive (ITC) and matching (ITM) losses, shared by every recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from maskmm._ramp import linear_ramp
from maskmm.losses.contrastive import ImageTextContrastive

__all__ = ["ITCConfig", "ITMConfig"]


def _ratio(path: str, v: float) -> None:
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"config field {path!r} must lie in [0, 1], got {v}")


def _nonneg(path: str, v: float) -> None:
    if v < 0:
        raise ValueError(f"config field {path!r} must be >= 0, got {v}")


@dataclass
class ITCConfig:
    """ALBEF ITC. ``momentum_keys``: keys (and the queue) are the EMA teacher's features, with
    momentum distillation (ALBEF); ``False``: keys are the online features of the global batch
    (CLIP style, no distillation), which learns much faster from scratch. ``pool``: the ITC
    feature is the CLS state (ALBEF) or the mean of the valid non-CLS states.
    ``queue_size``: queued keys are meant for momentum keys; with online keys the queue holds
    stale features of a fast-moving encoder, whose common push collapses the features of a model
    trained from scratch (ITC at chance), so keep it 0 there (as MoCo without momentum).
    ``learnable_temperature``: ALBEF learns it (clamped to [0.001, 0.5]); with a high learning
    rate from scratch it can run to the lower clamp, so small runs may keep it fixed.
    ``alpha`` ramps linearly from 0 over ``alpha_warmup_steps`` (ALBEF: the first epoch).
    ``false_negatives``: captions the batch's facts mark as true of another image of the batch are
    ``"positive"`` keys of that image (multi-positive targets) or are left out of its softmax
    (``"exclude"``); see :func:`maskmm.losses.image_text_contrastive_loss` and docs/itm.md."""

    momentum_keys: bool = True
    pool: Literal["cls", "mean"] = "cls"
    queue_size: int = 1024
    temperature: float = 0.07
    learnable_temperature: bool = True
    alpha: float = 0.4
    alpha_warmup_steps: int = 0
    distill: bool = True
    false_negatives: Literal["positive", "exclude"] = "positive"

    def check(self, p: str = "itc.") -> None:
        _nonneg(f"{p}queue_size", self.queue_size)
        if not 0.001 <= self.temperature <= 0.5:
            raise ValueError(
                f"config field '{p}temperature' must lie in [0.001, 0.5], got {self.temperature}"
            )
        _ratio(f"{p}alpha", self.alpha)
        _nonneg(f"{p}alpha_warmup_steps", self.alpha_warmup_steps)

    def alpha_at(self, step: int) -> float:
        """Distillation weight at the 0-based ``step``."""
        return linear_ramp(step, self.alpha_warmup_steps, self.alpha)

    def build(self, embed_dim: int) -> ImageTextContrastive:
        """The loss module: queue, temperature (learnable or fixed) and false-negative handling."""
        return ImageTextContrastive(
            embed_dim,
            self.queue_size,
            self.temperature,
            learnable_temperature=self.learnable_temperature,
            false_negatives=self.false_negatives,
        )


@dataclass
class ITMConfig:
    """ALBEF ITM negatives. Each image's negative text (and each text's negative image) is drawn
    from ``hardness * softmax(ITC similarity) + (1 - hardness) * uniform`` over the other pairs of
    the batch (:func:`maskmm.losses.sample_hard_negatives`). ``hardness`` is 0 for the first
    ``easy_steps`` steps, then ramps linearly to ``hardness`` over ``ramp_steps``. ALBEF draws hard
    negatives from the first step (``easy_steps = ramp_steps = 0``), with a pretrained text
    encoder; a matching head trained from scratch on hard negatives alone stays at the class prior
    (it answers "no match" to every pair), so small runs from scratch start with random ones."""

    hardness: float = 1.0
    easy_steps: int = 0
    ramp_steps: int = 0

    def check(self, p: str = "itm.") -> None:
        _ratio(f"{p}hardness", self.hardness)
        _nonneg(f"{p}easy_steps", self.easy_steps)
        _nonneg(f"{p}ramp_steps", self.ramp_steps)

    def hardness_at(self, step: int) -> float:
        """Hardness of the negatives drawn at the 0-based ``step`` (counted from ITM's start)."""
        if step < self.easy_steps:
            return 0.0
        return linear_ramp(step - self.easy_steps, self.ramp_steps, self.hardness)
