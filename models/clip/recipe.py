"""CLIP as a recipe of the one trainer: ``maskmm-train --recipe clip --config tiny``."""

from __future__ import annotations

from pathlib import Path

from maskmm.nn import ProjectionHead
from maskmm.nn.encoders_config import build_encoders
from maskmm.training.recipe import Recipe, TokenizerIds

from .config import CLIPConfig
from .model import CLIP, CLIPStudent

__all__ = ["RECIPE", "build"]


def build(cfg: CLIPConfig, ids: TokenizerIds) -> CLIP:
    """The CLIP objective of ``cfg``: image and text encoders (no fusion, no mask token) and their
    projections. The vocabulary is the tokenizer's (``model.vocab_size``, if > 0, may enlarge it)."""
    cfg.validate()
    m = cfg.model
    if 0 < m.vocab_size < ids.vocab_size:
        raise ValueError(
            f"config field 'model.vocab_size' ({m.vocab_size}) is smaller than the tokenizer's "
            f"vocabulary ({ids.vocab_size}); use 0 (= the tokenizer's)"
        )
    vocab = m.vocab_size or ids.vocab_size
    vision, text, _ = build_encoders(m, vocab, ids.pad_id, mask_token=False, fusion=False)
    student = CLIPStudent(
        vision=vision,
        text=text,
        vision_proj=ProjectionHead(m.vision_dim, m.embed_dim),
        text_proj=ProjectionHead(m.text_dim, m.embed_dim),
    )
    c = cfg.itc
    return CLIP(
        student,
        temperature=c.temperature,
        learnable_temperature=c.learnable_temperature,
        min_temperature=c.min_temperature,
        pool=c.pool,
        false_negatives=c.false_negatives,
    )


RECIPE = Recipe("clip", CLIPConfig, build, (Path(__file__).resolve().parent,))
