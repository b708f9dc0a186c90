"""ALBEF as a recipe of the one trainer: ``maskmm-train --recipe albef --config tiny``."""

from __future__ import annotations

from pathlib import Path

from maskmm.nn import MatchingHead, ProjectionHead, build_mlm_head
from maskmm.nn.encoders_config import build_encoders
from maskmm.training.recipe import Recipe, TokenizerIds

from .config import ALBEFConfig
from .model import ALBEF, ALBEFSchedule, ALBEFStudent

__all__ = ["RECIPE", "build"]


def build(cfg: ALBEFConfig, ids: TokenizerIds) -> ALBEF:
    """The ALBEF objective of ``cfg`` for a tokenizer's ids. Only the parts of enabled losses are built
    (so every parameter gets a gradient: DDP needs no ``find_unused_parameters``). The vocabulary is
    the tokenizer's (``model.vocab_size``, if > 0, may enlarge it)."""
    cfg.validate()
    m, L = cfg.model, cfg.losses
    if 0 < m.vocab_size < ids.vocab_size:
        raise ValueError(
            f"config field 'model.vocab_size' ({m.vocab_size}) is smaller than the tokenizer's "
            f"vocabulary ({ids.vocab_size}); use 0 (= the tokenizer's)"
        )
    vocab = m.vocab_size or ids.vocab_size
    vision, text, fusion = build_encoders(m, vocab, ids.pad_id, mask_token=False, fusion=L.itm or L.mlm)
    student = ALBEFStudent(
        vision=vision,
        text=text,
        fusion=fusion,
        vision_proj=ProjectionHead(m.vision_dim, m.embed_dim) if L.itc else None,
        text_proj=ProjectionHead(m.text_dim, m.embed_dim) if L.itc else None,
        itm_head=MatchingHead(m.text_dim) if L.itm else None,
        mlm_head=build_mlm_head(text, tie=True) if L.mlm else None,
    )
    c = cfg.itc
    itc = c.build(m.embed_dim) if L.itc else None
    masker = cfg.text_masking.build(vocab, ids.mask_id, ids.special_ids) if L.mlm else None
    return ALBEF(
        student,
        losses=L.enabled(),
        weights={n: L.weight(n) for n in L.enabled()},
        itc=itc,
        text_masker=masker,
        itc_momentum_keys=c.momentum_keys,
        itc_distill=c.distill,
        mlm_distill=L.mlm_distill,
        itc_pool=c.pool,
        ema_decay=cfg.ema.decay_schedule(),
        schedule=ALBEFSchedule(alpha=c.alpha_at, itm_hardness=cfg.itm.hardness_at),
    )


RECIPE = Recipe("albef", ALBEFConfig, build, (Path(__file__).resolve().parent,))
