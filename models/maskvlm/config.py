"""Configuration of the MaskVLM recipe (joint masked vision and language modeling).

What follows the paper (DESIGN.md §3): ITC + ITM on the clean pair; one view with the image masked
in 32x32-pixel blocks at 60 % and the caption clean, reconstructed (L1 on the masked pixels) by a
decoder of cross-attention blocks attending to the unmasked text; one view with the image clean and
the caption masked at 30 %, predicted through the fusion encoder; all losses unweighted; no EMA
teacher.

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

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["LOSS_NAMES", "MaskVLMConfig"]

#: Loss names, in the order they appear in outputs.
LOSS_NAMES: tuple[str, ...] = ("itc", "itm", "mlm", "mim")


def _ratio(name: str, value: float, *, one_ok: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"MaskVLMConfig.{name} must be a float, got {type(value).__name__}")
    if not (0.0 <= value < 1.0 or (one_ok and value == 1.0)):
        raise ValueError(f"MaskVLMConfig.{name} must lie in [0, {'1]' if one_ok else '1)'}, got {value}")


def _int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"MaskVLMConfig.{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"MaskVLMConfig.{name} must be >= {minimum}, got {value}")


@dataclass
class MaskVLMConfig:
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

    @property
    def losses(self) -> tuple[str, ...]:
        """Names of the enabled losses."""
        return tuple(n for n in LOSS_NAMES if getattr(self, n))

    def weight(self, name: str) -> float:
        """Weight of loss ``name``."""
        return float(getattr(self, f"{name}_weight"))

    def replace(self, **changes: Any) -> MaskVLMConfig:
        """A validated copy with ``changes`` applied (e.g. ``cfg.replace(mim=False)``)."""
        return dataclasses.replace(self, **changes)

    def validate(self) -> MaskVLMConfig:
        """Check ranges and consistency; raise ``ValueError``/``TypeError`` naming the field."""
        if not isinstance(self.encoders, str):
            raise TypeError(
                f"MaskVLMConfig.encoders must be a preset name, got {type(self.encoders).__name__}"
            )
        if not isinstance(self.encoder_overrides, dict):
            raise TypeError(
                f"MaskVLMConfig.encoder_overrides must be a dict, got {type(self.encoder_overrides).__name__}"
            )
        for name in LOSS_NAMES:
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"MaskVLMConfig.{name} must be a bool, got {getattr(self, name)!r}")
            w = getattr(self, f"{name}_weight")
            if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
                raise ValueError(f"MaskVLMConfig.{name}_weight must be a float >= 0, got {w!r}")
        if not self.losses:
            raise ValueError("MaskVLMConfig turns every loss off (itc, itm, mlm, mim); enable at least one")
        _int("embed_dim", self.embed_dim, 1)
        if not 0.001 <= self.temperature <= 0.5:
            raise ValueError(f"MaskVLMConfig.temperature must lie in [0.001, 0.5], got {self.temperature}")
        _ratio("image_mask_ratio", self.image_mask_ratio)
        _int("block_size", self.block_size, 1)
        if isinstance(self.mask_fill, bool) or not isinstance(self.mask_fill, (int, float)):
            raise TypeError(f"MaskVLMConfig.mask_fill must be a float, got {self.mask_fill!r}")
        _ratio("text_mask_ratio", self.text_mask_ratio)
        _ratio("mask_prob", self.mask_prob, one_ok=True)
        _ratio("random_prob", self.random_prob, one_ok=True)
        if self.mask_prob + self.random_prob > 1.0 + 1e-9:
            raise ValueError(
                "MaskVLMConfig.mask_prob + random_prob must be <= 1, "
                f"got {self.mask_prob} + {self.random_prob}"
            )
        _int("mask_token_id", self.mask_token_id, 0)
        for i in self.special_ids:
            _int("special_ids[*]", i, 0)
        _int("decoder_depth", self.decoder_depth, 1)
        if self.decoder_dim is not None:
            _int("decoder_dim", self.decoder_dim, 1)
        if self.decoder_heads is not None:
            _int("decoder_heads", self.decoder_heads, 1)
        if self.pixel_loss not in ("l1", "mse"):
            raise ValueError(f"MaskVLMConfig.pixel_loss must be 'l1' or 'mse', got {self.pixel_loss!r}")
        return self
