"""Config sections of the masking strategies, shared by the recipes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .tokens import TokenMasker

__all__ = ["JointMaskingConfig", "TextMaskingConfig"]


def _ratio(path: str, v: float, *, one_ok: bool) -> None:
    if not (0.0 <= v < 1.0 or (one_ok and v == 1.0)):
        raise ValueError(f"config field {path!r} must lie in [0, {'1]' if one_ok else '1)'}, got {v}")


@dataclass
class TextMaskingConfig:
    """BERT-style token masking: ``ratio`` of the maskable tokens of each caption (an exact count),
    of which ``mask_prob`` become ``[MASK]``, ``random_prob`` a random token, the rest unchanged."""

    ratio: float = 0.15
    mask_prob: float = 0.8
    random_prob: float = 0.1

    def check(self, p: str = "text_masking.") -> None:
        _ratio(f"{p}ratio", self.ratio, one_ok=False)
        _ratio(f"{p}mask_prob", self.mask_prob, one_ok=True)
        _ratio(f"{p}random_prob", self.random_prob, one_ok=True)
        if self.mask_prob + self.random_prob > 1.0 + 1e-9:
            raise ValueError(
                f"config fields '{p}mask_prob' + '{p}random_prob' must be <= 1, got "
                f"{self.mask_prob} + {self.random_prob}"
            )

    def build(self, vocab_size: int, mask_token_id: int, special_ids: Sequence[int]) -> TokenMasker:
        """The :class:`~maskmm.masking.TokenMasker` of this section for a tokenizer's ids."""
        return TokenMasker(
            self.ratio,
            mask_token_id=mask_token_id,
            vocab_size=vocab_size,
            special_ids=tuple(special_ids),
            mask_prob=self.mask_prob,
            random_prob=self.random_prob,
        )


@dataclass
class JointMaskingConfig:
    """Joint masking of one view: ``image_ratio`` of the patches (``mode``: ``"drop"`` removes them
    before the ViT, MAE style; ``"token"`` replaces them by a learnt mask token) and ``text_ratio`` of
    the caption's maskable tokens (BERT 80/10/10 by ``mask_prob`` / ``random_prob``)."""

    image_ratio: float = 0.75
    text_ratio: float = 0.25
    mode: Literal["drop", "token"] = "drop"
    mask_prob: float = 0.8
    random_prob: float = 0.1

    def text(self) -> TextMaskingConfig:
        return TextMaskingConfig(self.text_ratio, self.mask_prob, self.random_prob)

    def check(self, p: str = "masking.") -> None:
        _ratio(f"{p}image_ratio", self.image_ratio, one_ok=False)
        _ratio(f"{p}text_ratio", self.text_ratio, one_ok=False)
        _ratio(f"{p}mask_prob", self.mask_prob, one_ok=True)
        _ratio(f"{p}random_prob", self.random_prob, one_ok=True)
        if self.mask_prob + self.random_prob > 1.0 + 1e-9:
            raise ValueError(
                f"config fields '{p}mask_prob' + '{p}random_prob' must be <= 1, got "
                f"{self.mask_prob} + {self.random_prob}"
            )
