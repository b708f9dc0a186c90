"""Configuration of the SemMIM recipe (semantics-enhanced cross-modal masked image modeling).

What follows the paper (docs/methods.md, SemMIM section): a momentum (EMA) encoder; its global
image features are mapped into a learnable space of ``K`` codes by self-supervised agreement
(DINO-like soft assignment); local patch encodings share that space, so masked patches are predicted
as distributions over the ``K`` codes; the patches most relevant to the caption are masked; text
takes part in masked modeling; plus ITC and ITM (MLM optional).

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

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .._common import (
    LossSwitches,
    check_float_field,
    check_int_field,
    check_ratio_field,
    check_switch_fields,
    check_text_masking_fields,
)

__all__ = ["LOSS_NAMES", "SemMIMConfig"]

#: Loss names, in the order they appear in outputs.
LOSS_NAMES: tuple[str, ...] = ("itc", "itm", "mlm", "mim", "global_codes")


@dataclass
class SemMIMConfig(LossSwitches):
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

    LOSS_NAMES: ClassVar[tuple[str, ...]] = LOSS_NAMES

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

    def validate(self) -> SemMIMConfig:
        """Check ranges and consistency; raise ``ValueError``/``TypeError`` naming the field."""
        check_switch_fields(self)
        check_int_field(self, "embed_dim", 1)
        check_float_field(self, "temperature", 0.001, 0.5)
        check_int_field(self, "itc_queue_size", 0)
        check_ratio_field(self, "itc_alpha", allow_one=True)
        for name in ("num_codes", "code_dim", "code_hidden_dim"):
            check_int_field(self, name, 1)
        check_float_field(self, "teacher_temp", 0.0, open_low=True)
        check_float_field(self, "student_temp", 0.0, open_low=True)
        check_ratio_field(self, "center_momentum", allow_one=True)
        check_ratio_field(self, "mask_ratio")
        check_float_field(self, "mask_temperature", 0.0)
        if self.mask_mode not in ("token", "drop"):
            raise ValueError(f"SemMIMConfig.mask_mode must be 'token' or 'drop', got {self.mask_mode!r}")
        check_text_masking_fields(self)
        check_ratio_field(self, "ema_decay", allow_one=True)
        check_ratio_field(self, "ema_final_decay", allow_one=True)
        check_int_field(self, "ema_anneal_steps", 0)
        return self
