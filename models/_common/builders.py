"""Builder steps shared by the recipes: encoder presets and the text masker."""

from __future__ import annotations

import dataclasses
from typing import Any

from maskmm.masking import TokenMasker
from maskmm.nn import PresetConfigs, preset


def preset_encoders(config: Any, *, mask_token: bool) -> PresetConfigs:
    """The encoder configs of a recipe config: the :func:`maskmm.nn.preset` ``config.encoders`` with
    ``config.encoder_overrides``; the ViT gets (or loses) its mask token and the fusion reads image
    tokens of the ViT's width."""
    enc = preset(config.encoders, **config.encoder_overrides)
    vision = dataclasses.replace(enc.vision, mask_token=mask_token)
    fusion = enc.fusion
    if fusion.context_dim != vision.dim and fusion.image_dim is None:
        fusion = dataclasses.replace(fusion, image_dim=vision.dim)
    return PresetConfigs(vision, enc.text, fusion)


def token_masker(config: Any, vocab_size: int) -> TokenMasker:
    """The BERT text masker of the fields checked by :func:`check_text_masking_fields`."""
    return TokenMasker(
        config.text_mask_ratio,
        mask_token_id=config.mask_token_id,
        vocab_size=vocab_size,
        special_ids=config.special_ids,
        mask_prob=config.mask_prob,
        random_prob=config.random_prob,
    )
