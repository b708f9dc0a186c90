"""MaskVLM as a recipe of the one trainer: ``maskmm-train --recipe maskvlm --config tiny``."""

from __future__ import annotations

from pathlib import Path

from maskmm.training.recipe import Recipe, TokenizerIds

from .builder import build_model
from .config import MaskVLMConfig
from .model import MaskVLM

__all__ = ["RECIPE", "build"]


def build(cfg: MaskVLMConfig, ids: TokenizerIds) -> MaskVLM:
    """The MaskVLM objective of ``cfg`` for a tokenizer's ids."""
    return build_model(
        cfg,
        vocab_size=ids.vocab_size,
        pad_id=ids.pad_id,
        mask_token_id=ids.mask_id,
        special_ids=ids.special_ids,
    )


RECIPE = Recipe("maskvlm", MaskVLMConfig, build, (Path(__file__).resolve().parent,))
