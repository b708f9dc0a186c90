"""Config -> parts -> :class:`~maskmm.models.maskvlm.model.MaskVLM`."""

from __future__ import annotations

from typing import Any

from maskmm.losses import ImageTextContrastive
from maskmm.masking import JointMasker, PixelBlockMasker
from maskmm.nn import (
    MatchingHead,
    PredictionDecoder,
    PresetConfigs,
    ProjectionHead,
    build_fusion_encoder,
    build_mlm_head,
    build_text_encoder,
    build_vision_encoder,
)

from .._common import preset_encoders, token_masker
from .config import MaskVLMConfig
from .model import MaskVLM

__all__ = ["build_maskvlm", "encoder_configs", "tiny_config"]


def tiny_config(**changes: Any) -> MaskVLMConfig:
    """A CPU-sized configuration on ``maskmm.nn.preset("tiny")`` (64 px images, patch 8).

    Pixel blocks shrink to 16 px with the image (4x4 blocks, 10 hidden at 60 %); the decoder has one
    block; ITC features are 64 wide. ``changes`` replace any field.
    """
    base = {"encoders": "tiny", "block_size": 16, "decoder_depth": 1, "embed_dim": 64}
    base.update(changes)
    return MaskVLMConfig(**base)


def encoder_configs(config: MaskVLMConfig) -> PresetConfigs:
    """The encoder configs of ``config``: its preset with its overrides; the ViT has no mask token
    (MaskVLM hides pixels, never patches) and the fusion reads image tokens of the ViT's width."""
    return preset_encoders(config, mask_token=False)


def build_maskvlm(config: MaskVLMConfig | None = None, *, encoders: PresetConfigs | None = None) -> MaskVLM:
    """Build every part ``config`` needs and assemble a :class:`MaskVLM`.

    Args:
        config: default :class:`MaskVLMConfig` (base encoders).
        encoders: explicit encoder configs; default :func:`encoder_configs` of ``config``.

    Only the parts of enabled losses are built, so every trainable parameter gets a gradient.
    """
    config = (config if config is not None else MaskVLMConfig()).validate()
    enc = encoders if encoders is not None else encoder_configs(config)
    if not isinstance(enc, PresetConfigs):
        raise TypeError(f"encoders must be maskmm.nn.PresetConfigs, got {type(enc).__name__}")
    v, t = enc.vision, enc.text
    vision = build_vision_encoder(v)
    text = build_text_encoder(t)
    on = set(config.losses)
    fusion = build_fusion_encoder(enc.fusion) if on & {"itm", "mlm"} else None
    decoder = None
    if "mim" in on:
        decoder = PredictionDecoder(
            v.dim,
            v.patch_size * v.patch_size * v.in_chans,
            dim=config.decoder_dim or v.dim,
            depth=config.decoder_depth,
            num_heads=config.decoder_heads or v.num_heads,
            mlp_ratio=v.mlp_ratio,
            cross_attend=True,
            context_dim=t.dim,
            attn_backend=v.attn_backend,
        )
    masker = JointMasker(
        PixelBlockMasker(
            config.image_mask_ratio,
            block_size=config.block_size,
            patch_size=v.patch_size,
            fill=config.mask_fill,
            learnable_fill=config.learnable_fill and "mim" in on,
            channels=v.in_chans,
        ),
        token_masker(config, t.vocab_size),
        mode="separate",
    )
    itc = "itc" in on
    return MaskVLM(
        vision=vision,
        text=text,
        masker=masker,
        config=config,
        fusion=fusion,
        vision_proj=ProjectionHead(v.dim, config.embed_dim) if itc else None,
        text_proj=ProjectionHead(t.dim, config.embed_dim) if itc else None,
        itc_loss=ImageTextContrastive(config.embed_dim, 0, config.temperature) if itc else None,
        itm_head=MatchingHead(enc.fusion.dim) if "itm" in on else None,
        mlm_head=build_mlm_head(text, tie=True) if "mlm" in on else None,
        pixel_decoder=decoder,
    )
