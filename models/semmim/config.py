"""Configuration of the SemMIM recipe (semantics-enhanced cross-modal masked image modeling).

A :class:`SemMIMConfig` composes the shared sections of :mod:`maskmm` (``model``: the encoders,
``itc`` / ``itm``: the contrastive and matching losses, ``text_masking``: BERT token masking,
``ema``: the momentum model, and the run's ``optim`` / ``train`` / ``data`` / ``eval`` / ``log``)
with SemMIM's own sections: ``codes`` (the code space and its targets), ``image_masking``
(text-guided patch masking) and ``losses`` (switches, weights, start steps). Presets live beside
this file (``tiny.yaml``, ``base.yaml``); ``--set section.field=value`` overrides any field.

What follows the paper (docs/methods.md, SemMIM section): a momentum (EMA) encoder; its global
image features are mapped into a learnable space of ``K`` codes by self-supervised agreement
(DINO-like soft assignment); local patch encodings share that space, so masked patches are predicted
as distributions over the ``K`` codes; the patches most relevant to the caption are masked; text
takes part in masked modeling; plus ITC and ITM (MLM optional).

Our choices (DINO / iBOT practice where one exists), each a field here; the defaults below are the
``base`` preset's:

- code space: a shared head (Linear-GELU-Linear to ``codes.dim``) then a weight-normalised
  :class:`~maskmm.targets.PrototypeProjection` to ``codes.num_codes`` codes (iBOT: 8192), shared by
  the global (CLS) and local (patch) features, copied by the momentum encoder;
- targets: the momentum model's codes of the *clean* pair, centred and sharpened
  (``codes.teacher_temp = 0.04``, centre momentum 0.9, one centre for CLS and one for patches, as
  iBOT); student temperature 0.1;
- text in both branches: student and momentum image states are taken after the (merged) fusion
  encoder with the clean caption, so the codes are text-aware;
- ``global_codes`` loss: student fused CLS of the masked view vs the momentum fused CLS of the
  clean view (the agreement that shapes the code space); ``mim`` loss: student fused patch states
  at masked positions vs the momentum fused patch states;
- text-guided masking: score = cosine similarity of the momentum model's projected caption feature
  and projected patch states (ITC spaces); ``image_masking.ratio = 0.5`` patches drawn by
  Gumbel-top-k with ``image_masking.temperature = 0.1`` (``0`` = always the top patches); masked
  patches are replaced by the ViT mask token at its input (``image_masking.mode = token``, iBOT) or
  dropped (``drop``);
- EMA decay 0.996 (``ema.*``; annealing to ``ema.final_decay`` optional, DINO: 1.0);
- ITC as ALBEF: momentum keys, a queue of 4096 and soft targets (``itc.alpha``); MLM (off by
  default) at 15 % with the clean image as context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from maskmm.losses.config import ITCConfig, ITMConfig
from maskmm.masking.config import TextMaskingConfig
from maskmm.nn.encoders_config import EncodersConfig
from maskmm.teachers.config import EMAConfig
from maskmm.training import config as _config
from maskmm.training.config import (
    RunConfig,
    TrainConfig,
    check_positive,
    check_ratio_value,
    config_to_dict,
    dump_config,
)

__all__ = [
    "LOSS_NAMES",
    "PRESET_DIR",
    "CodesConfig",
    "LossesConfig",
    "SemMIMConfig",
    "TextGuidedMaskingConfig",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "load_config",
]

PRESET_DIR = Path(__file__).resolve().parent

#: Loss names, in the order they appear in outputs.
LOSS_NAMES: tuple[str, ...] = ("itc", "itm", "mlm", "mim", "global_codes")

#: Losses of the masked view scored in the code space.
CODED: tuple[str, ...] = ("mim", "global_codes")


@dataclass
class CodesConfig:
    """The code space and its targets: ``num_codes`` (``K``) codes read by a shared head
    ``fused states -> hidden_dim -> dim``; targets are the momentum model's codes, centred (EMA
    ``center_momentum``) and sharpened by ``teacher_temp``; the student's logits are divided by
    ``student_temp``."""

    num_codes: int = 8192
    dim: int = 256
    hidden_dim: int = 2048
    teacher_temp: float = 0.04
    student_temp: float = 0.1
    center_momentum: float = 0.9

    def check(self, p: str = "codes.") -> None:
        for name in ("num_codes", "dim", "hidden_dim", "teacher_temp", "student_temp"):
            check_positive(f"{p}{name}", getattr(self, name))
        check_ratio_value(f"{p}center_momentum", self.center_momentum, one_ok=True)


@dataclass
class TextGuidedMaskingConfig:
    """Text-guided patch masking: ``ratio`` of the patches, drawn by Gumbel-top-k on the
    text-to-patch relevance with noise ``temperature`` (0 = always the most relevant patches).
    ``mode``: ``"token"`` replaces masked patches by the ViT mask token at its input (iBOT);
    ``"drop"`` removes them before the ViT and inserts mask tokens before the fusion (MAE)."""

    ratio: float = 0.5
    temperature: float = 0.1
    mode: Literal["token", "drop"] = "token"

    def check(self, p: str = "image_masking.") -> None:
        check_ratio_value(f"{p}ratio", self.ratio)
        check_positive(f"{p}temperature", self.temperature, zero_ok=True)


@dataclass
class LossesConfig:
    """Which losses run, their weights, and the steps at which they join.

    ``mim``: masked patches predict the momentum patch codes; ``global_codes``: the masked view's
    fused CLS predicts the momentum global codes. ``itm_start_step`` / ``masked_start_step``: ITM,
    and the masked views (MIM, global codes, MLM), join the objective at these 0-based steps (0 =
    from the first step, as the paper). The ITM hard-negative schedule (``itm.*``) counts from
    ``itm_start_step``.
    """

    itc: bool = True
    itm: bool = True
    mlm: bool = False
    mim: bool = True
    global_codes: bool = True
    itc_weight: float = 1.0
    itm_weight: float = 1.0
    mlm_weight: float = 1.0
    mim_weight: float = 1.0
    global_codes_weight: float = 1.0
    itm_start_step: int = 0
    masked_start_step: int = 0

    def enabled(self) -> tuple[str, ...]:
        """Names of the enabled losses, in :data:`LOSS_NAMES` order."""
        return tuple(n for n in LOSS_NAMES if getattr(self, n))

    def start_of(self, name: str) -> int:
        """The 0-based step at which loss ``name`` joins."""
        if name == "itm":
            return self.itm_start_step
        return self.masked_start_step if name in ("mlm", *CODED) else 0

    def active_at(self, step: int) -> tuple[str, ...]:
        """The enabled losses computed at the 0-based ``step``."""
        return tuple(n for n in self.enabled() if step >= self.start_of(n))

    def weight(self, name: str) -> float:
        return float(getattr(self, f"{name}_weight"))

    def check(self, p: str = "losses.") -> None:
        if not self.enabled():
            raise ValueError(
                f"config section '{p[:-1]}' turns every loss off ({', '.join(LOSS_NAMES)}); "
                "enable at least one"
            )
        for name in LOSS_NAMES:
            check_positive(f"{p}{name}_weight", self.weight(name), zero_ok=True)
        check_positive(f"{p}itm_start_step", self.itm_start_step, zero_ok=True)
        check_positive(f"{p}masked_start_step", self.masked_start_step, zero_ok=True)
        if not self.active_at(0):
            raise ValueError(
                f"config section '{p[:-1]}' computes no loss at step 0 (every enabled loss starts later); "
                f"enable itc or set {p}itm_start_step / {p}masked_start_step to 0"
            )


@dataclass
class SemMIMConfig(RunConfig):
    """Full configuration: encoders, ITC, ITM, momentum model, code space, text-guided and text
    masking, losses, and the run."""

    model: EncodersConfig = field(default_factory=EncodersConfig)
    itc: ITCConfig = field(default_factory=lambda: ITCConfig(queue_size=4096))
    itm: ITMConfig = field(default_factory=ITMConfig)
    ema: EMAConfig = field(default_factory=lambda: EMAConfig(decay=0.996, final_decay=1.0))
    codes: CodesConfig = field(default_factory=CodesConfig)
    image_masking: TextGuidedMaskingConfig = field(default_factory=TextGuidedMaskingConfig)
    text_masking: TextMaskingConfig = field(default_factory=lambda: TextMaskingConfig(ratio=0.15))
    losses: LossesConfig = field(default_factory=LossesConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/semmim"))

    def check_recipe(self) -> None:
        m, L, d = self.model, self.losses, self.data
        coded = [n for n in CODED if getattr(L, n)]
        if coded and m.fusion != "merged":
            raise ValueError(
                f"config field 'model.fusion' must be 'merged' with losses {coded} on (fused states at "
                f"the image positions are scored), got {m.fusion!r}"
            )
        if L.itm and self.train.batch_size < 2:
            raise ValueError("config field 'train.batch_size' must be >= 2 when losses.itm is on (negatives)")
        if d.image_size != m.image_size:
            raise ValueError(
                f"config fields 'data.image_size' ({d.image_size}) and 'model.image_size' ({m.image_size}) "
                "differ"
            )
        if d.max_text_len > m.max_text_len:
            raise ValueError(
                f"config field 'data.max_text_len' ({d.max_text_len}) exceeds model.max_text_len "
                f"({m.max_text_len})"
            )


def load_config(preset: str | Path = "tiny", overrides: Sequence[str] = ()) -> SemMIMConfig:
    """Load a preset (name or YAML path), apply ``section.field=value`` overrides, validate.

    Example::

        cfg = load_config("tiny", ["train.steps=50", "losses.mlm=true"])
    """
    return _config.load_config(SemMIMConfig, preset, overrides, preset_dirs=[PRESET_DIR])


def config_from_dict(data: dict[str, Any], overrides: Sequence[str] = ()) -> SemMIMConfig:
    """Build and validate a :class:`SemMIMConfig` from a nested dict (unknown keys are errors)."""
    return _config.config_from_dict(SemMIMConfig, data, overrides)
