"""Configuration of the MaskVLM recipe (joint masked vision and language modeling).

What follows the paper (docs/methods.md, MaskVLM section): ITC + ITM on the clean pair; one view
with the image masked in 32x32-pixel blocks at 60 % and the caption clean, reconstructed (L1 on the
masked pixels) by a decoder of cross-attention blocks attending to the unmasked text; one view with
the image clean and the caption masked at 30 %, predicted through the fusion encoder; all losses
unweighted; no EMA teacher.

Our choices (not verified against the paper), all configurable here:

- masked pixels are filled with ``mask_fill`` (0.0 = the data mean of normalised inputs);
- the reconstruction target is the input pixels themselves (``normalize_target=False``), scored in
  pixel layout on exactly the hidden pixels;
- the decoder reads the ViT patch states of the masked image (CLS excluded) and cross-attends to the
  unimodal text-encoder states of the clean caption; width = vision width, ``decoder_depth=2``;
- ITC uses in-batch keys (no queue, no momentum features) with a learnable temperature (init 0.07);
- ITM draws one hard negative per image and per text from the ITC similarities (ALBEF);
- text masking is BERT 80/10/10, never on special ids or padding.
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

__all__ = ["LOSS_NAMES", "MaskVLMConfig"]

#: Loss names, in the order they appear in outputs.
LOSS_NAMES: tuple[str, ...] = ("itc", "itm", "mlm", "mim")


@dataclass
class MaskVLMConfig(LossSwitches):
    """Everything the MaskVLM builder needs besides the tokenizer.

    Attributes:
        encoders: name of the :func:`maskmm.nn.preset` of the vision, text and fusion encoders.
        encoder_overrides: fields replaced in that preset (e.g. ``{"depth": 1}``).
        itc, itm, mlm, mim: which losses run (``mim`` = masked pixel reconstruction).
        itc_weight, itm_weight, mlm_weight, mim_weight: loss weights (paper: all 1).
        embed_dim: ITC feature width.
        temperature: initial ITC temperature (learnable, clamped to ``[0.001, 0.5]``).
        image_mask_ratio: fraction of pixel blocks hidden (paper: 0.6).
        block_size: pixel block side (paper: 32); must nest with the ViT patch size.
        mask_fill: value of hidden pixels (ours: 0.0).
        learnable_fill: make the fill a learnable per-channel parameter (ours: off).
        text_mask_ratio: fraction of maskable tokens chosen for MLM (paper: 0.3).
        mask_prob, random_prob: BERT corruption of the chosen tokens (80 % [MASK], 10 % random).
        mask_token_id: id of ``[MASK]``; special_ids: ids never masked (the built-in tokenizer's
            ``[PAD]=0, [CLS]=1, [SEP]=2, [MASK]=3, [UNK]=4``).
        decoder_depth: cross-attention blocks of the pixel decoder (ours: 2).
        decoder_dim: decoder width (``None`` = vision width).
        decoder_heads: decoder heads (``None`` = vision heads).
        pixel_loss: ``"l1"`` (paper) or ``"mse"``.
        normalize_target: MAE per-patch normalisation of the target (ours: off, raw pixels).
    """

    LOSS_NAMES: ClassVar[tuple[str, ...]] = LOSS_NAMES

    encoders: str = "base"
    encoder_overrides: dict[str, Any] = field(default_factory=dict)
    itc: bool = True
    itm: bool = True
    mlm: bool = True
    mim: bool = True
    itc_weight: float = 1.0
    itm_weight: float = 1.0
    mlm_weight: float = 1.0
    mim_weight: float = 1.0
    embed_dim: int = 256
    temperature: float = 0.07
    image_mask_ratio: float = 0.6
    block_size: int = 32
    mask_fill: float = 0.0
    learnable_fill: bool = False
    text_mask_ratio: float = 0.3
    mask_prob: float = 0.8
    random_prob: float = 0.1
    mask_token_id: int = 3
    special_ids: tuple[int, ...] = (0, 1, 2, 3, 4)
    decoder_depth: int = 2
    decoder_dim: int | None = None
    decoder_heads: int | None = None
    pixel_loss: Literal["l1", "mse"] = "l1"
    normalize_target: bool = False

    def __post_init__(self) -> None:
        self.special_ids = tuple(self.special_ids)
        self.validate()

    def validate(self) -> MaskVLMConfig:
        """Check ranges and consistency; raise ``ValueError``/``TypeError`` naming the field."""
        check_switch_fields(self)
        check_int_field(self, "embed_dim", 1)
        check_float_field(self, "temperature", 0.001, 0.5)
        check_ratio_field(self, "image_mask_ratio")
        check_int_field(self, "block_size", 1)
        check_float_field(self, "mask_fill")
        check_text_masking_fields(self)
        check_int_field(self, "decoder_depth", 1)
        for name in ("decoder_dim", "decoder_heads"):
            if getattr(self, name) is not None:
                check_int_field(self, name, 1)
        if self.pixel_loss not in ("l1", "mse"):
            raise ValueError(f"MaskVLMConfig.pixel_loss must be 'l1' or 'mse', got {self.pixel_loss!r}")
        return self
