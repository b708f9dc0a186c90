"""SemMIM as a recipe of the one trainer: ``maskmm-train --recipe semmim --config tiny``."""

from __future__ import annotations

from pathlib import Path

from maskmm.training.recipe import Recipe, TokenizerIds

from .builder import build_model
from .config import SemMIMConfig
from .model import SemMIM

__all__ = ["RECIPE", "build"]


def build(cfg: SemMIMConfig, ids: TokenizerIds) -> SemMIM:
    """The SemMIM objective of ``cfg`` for a tokenizer's ids."""
    return build_model(
        cfg,
        vocab_size=ids.vocab_size,
        pad_id=ids.pad_id,
        mask_token_id=ids.mask_id,
        special_ids=ids.special_ids,
    )


RECIPE = Recipe("semmim", SemMIMConfig, build, (Path(__file__).resolve().parent,))
