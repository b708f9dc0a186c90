"""Configuration of the reference MAMO model and its training run.

A :class:`MAMOConfig` composes the shared sections of :mod:`maskmm` (``model``: the encoders,
``masking``: joint masking, ``itc`` / ``itm``: the contrastive and matching losses, ``ema``: the
teacher, and the run's ``optim`` / ``train`` / ``data`` / ``eval`` / ``log``) with MAMO's own
``losses`` section. Presets live beside this file as YAML (``tiny.yaml``, ``base.yaml``); copy one,
edit it, and pass its path wherever a preset name is accepted. Any field can be overridden with
``--set section.field=value``. Loading, merging and type checks are
:func:`maskmm.training.load_config`'s (OmegaConf); every load ends with :meth:`MAMOConfig.validate`,
which raises ``ValueError`` naming the offending field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from maskmm.losses.config import ITCConfig, ITMConfig
from maskmm.masking.config import JointMaskingConfig
from maskmm.nn.encoders_config import EncodersConfig
from maskmm.teachers.config import EMAConfig
from maskmm.training import config as _config
from maskmm.training.config import RunConfig, TrainConfig, check_positive, config_to_dict, dump_config

__all__ = [
    "PRESET_DIR",
    "LossesConfig",
    "MAMOConfig",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "load_config",
]

PRESET_DIR = Path(__file__).resolve().parent

#: Kept for code written against the earlier names of the shared sections.
ModelConfig = EncodersConfig
MaskingConfig = JointMaskingConfig


@dataclass
class LossesConfig:
    """Which losses run, their weights and their options.

    ``itm_start_step`` / ``masked_start_step``: ITM, and the masked view (MLM, MRM, MIM), join
    the objective at these 0-based steps (0 = from the first step, as MAMO). MAMO starts from
    pretrained unimodal encoders; a model trained from scratch on a small budget can stand in for
    that with a phase of ITC alone, whose steps cost a third of a full one (the ITM hard-negative
    schedule, ``itm.*``, counts from ``itm_start_step``).
    """

    itc: bool = True
    itm: bool = True
    mlm: bool = True
    mrm: bool = True
    mim: bool = True
    itc_weight: float = 1.0
    itm_weight: float = 1.0
    mlm_weight: float = 1.0
    mrm_weight: float = 1.0
    mim_weight: float = 1.0
    # MRM (implicit target): top-K teacher fusion layers, each normalised, averaged.
    mrm_top_k: int = 2
    mrm_kind: Literal["smooth_l1", "mse", "cosine"] = "smooth_l1"
    mrm_layer_norm: Literal["instance", "layer", "none"] = "layer"
    mrm_final_norm: Literal["none", "layer", "instance"] = "none"
    mrm_scale_by_dim: bool = True
    mrm_beta: float = 1.0
    # MIM (explicit target): teacher image-encoder features of the masked patches.
    mim_decoder_depth: int = 1
    mim_kind: Literal["smooth_l1", "mse", "cosine"] = "smooth_l1"
    mim_target_norm: bool = True
    mim_scale_by_dim: bool = True
    # ITM: the matching head reads the fused text CLS (ALBEF) or the mean of the fused states
    itm_input: Literal["cls", "mean"] = "cls"
    # MLM (explicit target) with optional distillation from the teacher.
    mlm_distill: bool = False
    # steps at which ITM and the masked view (MLM, MRM, MIM) join the objective
    itm_start_step: int = 0
    masked_start_step: int = 0

    def enabled(self) -> tuple[str, ...]:
        """Names of the enabled losses, in the order ITC, ITM, MLM, MRM, MIM."""
        return tuple(n for n in ("itc", "itm", "mlm", "mrm", "mim") if getattr(self, n))

    def active_at(self, step: int) -> tuple[str, ...]:
        """The enabled losses computed at the 0-based ``step``."""
        start = {"itm": self.itm_start_step, "mlm": self.masked_start_step}
        start["mrm"] = start["mim"] = self.masked_start_step
        return tuple(n for n in self.enabled() if step >= start.get(n, 0))

    def check(self, p: str = "losses.") -> None:
        if not self.enabled():
            raise ValueError(f"config section '{p[:-1]}' turns every loss off; enable at least one")
        for name in ("itc", "itm", "mlm", "mrm", "mim"):
            check_positive(f"{p}{name}_weight", getattr(self, f"{name}_weight"), zero_ok=True)
        check_positive(f"{p}itm_start_step", self.itm_start_step, zero_ok=True)
        check_positive(f"{p}masked_start_step", self.masked_start_step, zero_ok=True)
        if not self.active_at(0):
            raise ValueError(
                f"config section '{p[:-1]}' computes no loss at step 0 (every enabled loss starts later); "
                f"enable itc or set {p}itm_start_step / {p}masked_start_step to 0"
            )
        check_positive(f"{p}mrm_beta", self.mrm_beta)
        check_positive(f"{p}mim_decoder_depth", self.mim_decoder_depth, zero_ok=True)


@dataclass
class MAMOConfig(RunConfig):
    """Full configuration: model, masking, losses, teacher, optimiser, run, data, eval, logging."""

    model: EncodersConfig = field(default_factory=EncodersConfig)
    masking: JointMaskingConfig = field(default_factory=JointMaskingConfig)
    losses: LossesConfig = field(default_factory=LossesConfig)
    itc: ITCConfig = field(default_factory=ITCConfig)
    itm: ITMConfig = field(default_factory=ITMConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/mamo"))

    def check_recipe(self) -> None:
        m, L = self.model, self.losses
        if L.mrm_top_k < 1 or L.mrm_top_k > m.fusion_depth:
            raise ValueError(
                f"config field 'losses.mrm_top_k' must lie in [1, model.fusion_depth={m.fusion_depth}], "
                f"got {L.mrm_top_k}"
            )
        if self.train.batch_size < 2 and L.itm:
            raise ValueError(
                "config field 'train.batch_size' must be >= 2 when losses.itm is on (hard negatives)"
            )
        d = self.data
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


def load_config(
    preset: str | Path = "tiny", overrides: Sequence[str] = (), **sections: dict[str, Any]
) -> MAMOConfig:
    """Load a preset (name or YAML path), apply ``--set`` style overrides, validate.

    Example::

        cfg = load_config("tiny", ["train.steps=50", "losses.mrm=false"])
    """
    extra = [f"{name}.{k}={v}" for name, values in sections.items() for k, v in values.items()]
    return _config.load_config(MAMOConfig, preset, [*extra, *overrides], preset_dirs=[PRESET_DIR])


def config_from_dict(data: dict[str, Any], overrides: Sequence[str] = ()) -> MAMOConfig:
    """Build and validate a :class:`MAMOConfig` from a nested dict (unknown keys are errors)."""
    return _config.config_from_dict(MAMOConfig, data, overrides)
