"""Configuration of the SemMIM recipe (semantics-enhanced cross-modal masked image modeling).

What follows the paper (DESIGN.md §3): a momentum (EMA) encoder; its global image features are
mapped into a learnable space of ``K`` codes by self-supervised agreement (DINO-like soft
assignment); local patch encodings share that space, so masked patches are predicted as
distributions over the ``K`` codes; the patches most relevant to the caption are masked; text takes
part in masked modeling; plus ITC and ITM (MLM optional).

Our choices (DINO / iBOT practice where one exists), all configurable here:

- code space: a shared head (Linear-GELU-Linear to ``code_dim``) then a weight-normalised
  :class:`~maskmm.targets.PrototypeProjection` to ``num_codes`` codes (iBOT: 8192), shared by the
  global (CLS) and local (patch) features, copied by the momentum encoder;
- targets: the momentum model's codes of the *clean* pair, centred and sharpened
  (``teacher_temp = 0.04``, centre momentum 0.9, one centre for CLS and one for patches, as iBOT);
  student temperature 0.1;
- text in both branches: student and momentum image states are taken after the (merged) fusion
  encoder with the clean caption, so the codes are text-aware;
- ``global_codes`` loss: student fused CLS of the masked view vs the momentum fused CLS of the
  clean view (the agreement that shapes the code space); ``mim`` loss: student fused patch states
  at masked positions vs the momentum fused patch states;
- text-guided masking: score = cosine similarity of the momentum model's projected caption CLS
  and projected patch states (ITC spaces); ``mask_ratio = 0.5`` patches drawn by Gumbel-top-k with
  ``mask_temperature = 0.1`` (``0`` = always the top patches); masked patches are replaced by the
  ViT mask token at its input (``mask_mode="token"``, iBOT) or dropped (``"drop"``);
- EMA decay 0.996, optionally cosine-annealed to ``ema_final_decay`` (DINO: 1.0);
- ITC as ALBEF: momentum keys, a queue and soft targets (``itc_alpha``); MLM (off by default) at
  15 % with the clean image as context.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["LOSS_NAMES", "SemMIMConfig"]

#: Loss names, in the order they appear in outputs.
LOSS_NAMES: tuple[str, ...] = ("itc", "itm", "mlm", "mim", "global_codes")


def _ratio(name: str, value: float, *, one_ok: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"SemMIMConfig.{name} must be a float, got {type(value).__name__}")
    if not (0.0 <= value < 1.0 or (one_ok and value == 1.0)):
        raise ValueError(f"SemMIMConfig.{name} must lie in [0, {'1]' if one_ok else '1)'}, got {value}")


def _int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"SemMIMConfig.{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"SemMIMConfig.{name} must be >= {minimum}, got {value}")


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"SemMIMConfig.{name} must be a float, got {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"SemMIMConfig.{name} must be > 0, got {value}")


@dataclass
class SemMIMConfig:
    """Everything the SemMIM builder needs besides the tokenizer.

    Attributes:
        encoders: name of the :func:`maskmm.nn.preset` of the vision, text and fusion encoders.
            The fusion must be ``"merged"`` (image states are needed for masked modeling).
        encoder_overrides: fields replaced in that preset.
        itc, itm, mlm, mim, global_codes: which losses run (``mlm`` off by default).
        *_weight: loss weights (all 1).
        embed_dim: ITC feature width; temperature: initial ITC temperature (learnable).
        itc_queue_size: ITC queue of momentum features (0 = in-batch keys only).
        itc_alpha: weight of the momentum soft targets in ITC (ALBEF: 0.4).
        num_codes: ``K``; code_dim / code_hidden_dim: the shared code head's output / hidden width.
        teacher_temp, student_temp: sharpening temperatures of the targets / of the student.
        center_momentum: EMA momentum of the target centres.
        mask_ratio: fraction of patches masked; mask_temperature: Gumbel noise of the
            text-guided choice (``0`` = deterministic top-k).
        mask_mode: ``"token"`` (mask token at the ViT input) or ``"drop"`` (MAE style, mask tokens
            inserted before fusion).
        text_mask_ratio, mask_prob, random_prob: MLM text masking (BERT 80/10/10).
        mask_token_id, special_ids: ``[MASK]`` id and ids never masked.
        ema_decay, ema_final_decay, ema_anneal_steps: momentum schedule (constant ``ema_decay``
            when ``ema_anneal_steps = 0``, else half-cosine to ``ema_final_decay``).
    """

    encoders: str = "base"
    encoder_overrides: dict[str, Any] = field(default_factory=dict)
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
    embed_dim: int = 256
    temperature: float = 0.07
    itc_queue_size: int = 4096
    itc_alpha: float = 0.4
    num_codes: int = 8192
    code_dim: int = 256
    code_hidden_dim: int = 2048
    teacher_temp: float = 0.04
    student_temp: float = 0.1
    center_momentum: float = 0.9
    mask_ratio: float = 0.5
    mask_temperature: float = 0.1
    mask_mode: Literal["token", "drop"] = "token"
    text_mask_ratio: float = 0.15
    mask_prob: float = 0.8
    random_prob: float = 0.1
    mask_token_id: int = 3
    special_ids: tuple[int, ...] = (0, 1, 2, 3, 4)
    ema_decay: float = 0.996
    ema_final_decay: float = 1.0
    ema_anneal_steps: int = 0

    def __post_init__(self) -> None:
        self.special_ids = tuple(self.special_ids)
        self.validate()

    @property
    def losses(self) -> tuple[str, ...]:
        """Names of the enabled losses."""
        return tuple(n for n in LOSS_NAMES if getattr(self, n))

    def weight(self, name: str) -> float:
        """Weight of loss ``name``."""
        return float(getattr(self, f"{name}_weight"))

    def replace(self, **changes: Any) -> SemMIMConfig:
        """A validated copy with ``changes`` applied (e.g. ``cfg.replace(itm=False)``)."""
        return dataclasses.replace(self, **changes)

    def validate(self) -> SemMIMConfig:
        """Check ranges and consistency; raise ``ValueError``/``TypeError`` naming the field."""
        if not isinstance(self.encoders, str):
            raise TypeError(
                f"SemMIMConfig.encoders must be a preset name, got {type(self.encoders).__name__}"
            )
        if not isinstance(self.encoder_overrides, dict):
            raise TypeError(
                f"SemMIMConfig.encoder_overrides must be a dict, got {type(self.encoder_overrides).__name__}"
            )
        for name in LOSS_NAMES:
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"SemMIMConfig.{name} must be a bool, got {getattr(self, name)!r}")
            w = getattr(self, f"{name}_weight")
            if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
                raise ValueError(f"SemMIMConfig.{name}_weight must be a float >= 0, got {w!r}")
        if not self.losses:
            raise ValueError(
                f"SemMIMConfig turns every loss off ({', '.join(LOSS_NAMES)}); enable at least one"
            )
        _int("embed_dim", self.embed_dim, 1)
        if isinstance(self.temperature, bool) or not 0.001 <= self.temperature <= 0.5:
            raise ValueError(f"SemMIMConfig.temperature must lie in [0.001, 0.5], got {self.temperature}")
        _int("itc_queue_size", self.itc_queue_size, 0)
        _ratio("itc_alpha", self.itc_alpha, one_ok=True)
        _int("num_codes", self.num_codes, 1)
        _int("code_dim", self.code_dim, 1)
        _int("code_hidden_dim", self.code_hidden_dim, 1)
        _positive("teacher_temp", self.teacher_temp)
        _positive("student_temp", self.student_temp)
        _ratio("center_momentum", self.center_momentum, one_ok=True)
        _ratio("mask_ratio", self.mask_ratio)
        if isinstance(self.mask_temperature, bool) or not isinstance(self.mask_temperature, (int, float)):
            raise TypeError(f"SemMIMConfig.mask_temperature must be a float, got {self.mask_temperature!r}")
        if not 0.0 <= self.mask_temperature < float("inf"):
            raise ValueError(
                f"SemMIMConfig.mask_temperature must be a finite float >= 0, got {self.mask_temperature}"
            )
        if self.mask_mode not in ("token", "drop"):
            raise ValueError(f"SemMIMConfig.mask_mode must be 'token' or 'drop', got {self.mask_mode!r}")
        _ratio("text_mask_ratio", self.text_mask_ratio)
        _ratio("mask_prob", self.mask_prob, one_ok=True)
        _ratio("random_prob", self.random_prob, one_ok=True)
        if self.mask_prob + self.random_prob > 1.0 + 1e-9:
            raise ValueError(
                "SemMIMConfig.mask_prob + random_prob must be <= 1, "
                f"got {self.mask_prob} + {self.random_prob}"
            )
        _int("mask_token_id", self.mask_token_id, 0)
        for i in self.special_ids:
            _int("special_ids[*]", i, 0)
        _ratio("ema_decay", self.ema_decay, one_ok=True)
        _ratio("ema_final_decay", self.ema_final_decay, one_ok=True)
        _int("ema_anneal_steps", self.ema_anneal_steps, 0)
        return self
