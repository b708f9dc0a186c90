"""Configuration of the CLIP recipe: the shared ``model`` section (only the image and text encoders are
built; the ``fusion*`` fields are unused) and CLIP's own contrastive ``itc`` section, plus the run's
``optim`` / ``train`` / ``data`` / ``eval`` / ``log``. Presets: ``tiny.yaml``, ``base.yaml`` beside
this file."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from maskmm.nn.encoders_config import EncodersConfig
from maskmm.training.config import RunConfig, TrainConfig

__all__ = ["CLIPConfig", "ContrastiveConfig"]


@dataclass
class ContrastiveConfig:
    """CLIP's loss: symmetric InfoNCE between the image and text features of the global batch, keys
    are the online features (no momentum encoder, no queue).

    ``temperature``: the initial temperature (CLIP: 0.07). ``learnable_temperature``: CLIP learns it,
    parameterised as the log of the logit scale ``log(1 / temperature)``, clamped after every step
    so the logit scale never exceeds ``1 / min_temperature`` (CLIP: 100). ``pool``: the feature
    projected is the CLS state (CLIP's class token; the text CLS of a bidirectional encoder stands in
    for CLIP's EOT token) or the mean of the valid non-CLS states. ``false_negatives``: captions true of
    another image of the batch are its ``"positive"`` keys or are left out of its softmax
    (``"exclude"``), see :func:`maskmm.losses.image_text_contrastive_loss`."""

    pool: Literal["cls", "mean"] = "cls"
    temperature: float = 0.07
    learnable_temperature: bool = True
    min_temperature: float = 0.01
    false_negatives: Literal["positive", "exclude"] = "positive"

    def check(self, p: str = "itc.") -> None:
        if not (0.0 < self.min_temperature <= 1.0):
            raise ValueError(
                f"config field '{p}min_temperature' must lie in (0, 1], got {self.min_temperature}"
            )
        if not (self.min_temperature <= self.temperature <= 1.0) or not math.isfinite(self.temperature):
            raise ValueError(
                f"config field '{p}temperature' must lie in [{p}min_temperature "
                f"({self.min_temperature}), 1], got {self.temperature}"
            )


@dataclass
class CLIPConfig(RunConfig):
    """Full configuration of a CLIP run."""

    model: EncodersConfig = field(default_factory=EncodersConfig)
    itc: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/clip"))

    def check_recipe(self) -> None:
        m, d = self.model, self.data
        if d.image_size != m.image_size:
            raise ValueError(
                f"config fields 'data.image_size' ({d.image_size}) and 'model.image_size' "
                f"({m.image_size}) differ"
            )
        if d.max_text_len > m.max_text_len:
            raise ValueError(
                f"config field 'data.max_text_len' ({d.max_text_len}) exceeds "
                f"model.max_text_len ({m.max_text_len})"
            )
