"""Configuration of the ALBEF recipe: the shared sections ``model`` (encoders; ALBEF fuses by
cross-attention, ``model.fusion: cross``), ``text_masking`` (BERT masking of MLM), ``itc``, ``itm`` and
``ema`` (the momentum model), ALBEF's own ``losses`` section, and the run's ``optim`` / ``train`` /
``data`` / ``eval`` / ``log``. Presets: ``tiny.yaml``, ``base.yaml`` beside this file."""

from __future__ import annotations

from dataclasses import dataclass, field

from maskmm.losses.config import ITCConfig, ITMConfig
from maskmm.masking.config import TextMaskingConfig
from maskmm.nn.encoders_config import EncodersConfig
from maskmm.teachers.config import EMAConfig
from maskmm.training.config import RunConfig, TrainConfig, check_positive

__all__ = ["LOSS_NAMES", "ALBEFConfig", "ALBEFLossesConfig"]

#: ALBEF's losses, in the order they are computed and logged.
LOSS_NAMES: tuple[str, ...] = ("itc", "itm", "mlm")


@dataclass
class ALBEFLossesConfig:
    """Which of ALBEF's losses run and their weights (ALBEF: all three, weight 1).
    ``mlm_distill``: the MLM target mixes the momentum model's prediction (weight ``itc.alpha``, on
    the masked caption and the momentum image features) with the one-hot label, as ALBEF."""

    itc: bool = True
    itm: bool = True
    mlm: bool = True
    itc_weight: float = 1.0
    itm_weight: float = 1.0
    mlm_weight: float = 1.0
    mlm_distill: bool = True

    def enabled(self) -> tuple[str, ...]:
        return tuple(n for n in LOSS_NAMES if getattr(self, n))

    def weight(self, name: str) -> float:
        return float(getattr(self, f"{name}_weight"))

    def check(self, p: str = "losses.") -> None:
        if not self.enabled():
            raise ValueError(f"config section '{p[:-1]}' turns every loss off; enable at least one")
        for name in LOSS_NAMES:
            check_positive(f"{p}{name}_weight", getattr(self, f"{name}_weight"), zero_ok=True)


@dataclass
class ALBEFConfig(RunConfig):
    """Full configuration of an ALBEF run."""

    model: EncodersConfig = field(default_factory=lambda: EncodersConfig(fusion="cross"))
    text_masking: TextMaskingConfig = field(default_factory=TextMaskingConfig)
    losses: ALBEFLossesConfig = field(default_factory=ALBEFLossesConfig)
    itc: ITCConfig = field(default_factory=lambda: ITCConfig(queue_size=65536))
    itm: ITMConfig = field(default_factory=ITMConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/albef"))

    def check_recipe(self) -> None:
        m, d, L = self.model, self.data, self.losses
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
        if L.itm and self.train.batch_size < 2:
            raise ValueError(
                "config field 'train.batch_size' must be >= 2 when losses.itm is on (hard negatives)"
            )
        if self.itc.queue_size and not self.itc.momentum_keys and L.itc:
            raise ValueError(
                "config field 'itc.queue_size' must be 0 with itc.momentum_keys=false: a queue of online "
                "features holds stale keys of a fast-moving encoder (ALBEF queues momentum features)"
            )
