"""Builders: configs in, modules out."""

from __future__ import annotations

from .coattention import CoAttentionFusion
from .config import FusionConfig, PresetConfigs, TextConfig, VisionConfig, preset
from .fusion import CrossAttentionFusion, MergedFusion
from .heads import MaskedTokenHead
from .text import TextEncoder
from .vit import VisionTransformer

__all__ = [
    "build_encoders",
    "build_fusion_encoder",
    "build_mlm_head",
    "build_text_encoder",
    "build_vision_encoder",
]


def build_vision_encoder(config: VisionConfig) -> VisionTransformer:
    """ViT image encoder for ``config``."""
    return VisionTransformer(config)


def build_text_encoder(config: TextConfig) -> TextEncoder:
    """BERT-style text encoder for ``config``."""
    return TextEncoder(config)


FusionEncoder = MergedFusion | CrossAttentionFusion | CoAttentionFusion
_FUSIONS = {"merged": MergedFusion, "cross": CrossAttentionFusion, "coattention": CoAttentionFusion}


def build_fusion_encoder(config: FusionConfig) -> FusionEncoder:
    """``MergedFusion`` for ``config.kind == "merged"``, ``CrossAttentionFusion`` for ``"cross"``,
    ``CoAttentionFusion`` for ``"coattention"``."""
    if not isinstance(config, FusionConfig):
        raise TypeError(f"config must be a FusionConfig, got {type(config).__name__}")
    return _FUSIONS[config.kind](config)


def build_mlm_head(text_encoder: TextEncoder, *, tie: bool = True) -> MaskedTokenHead:
    """Masked-token head over ``text_encoder``'s vocabulary, tied to its word embeddings by default."""
    cfg = text_encoder.config
    return MaskedTokenHead(
        cfg.dim,
        cfg.vocab_size,
        tie_to=text_encoder.word_embeddings if tie else None,
        eps=cfg.layer_norm_eps,
    )


def build_encoders(
    configs: PresetConfigs | str, **overrides: object
) -> tuple[VisionTransformer, TextEncoder, FusionEncoder]:
    """Vision, text and fusion encoders from a :class:`PresetConfigs` or a preset name
    (``overrides`` as in :func:`~maskmm.nn.config.preset`)."""
    if isinstance(configs, str):
        configs = preset(configs, **overrides)
    elif overrides:
        raise ValueError("overrides are only accepted together with a preset name")
    return (
        build_vision_encoder(configs.vision),
        build_text_encoder(configs.text),
        build_fusion_encoder(configs.fusion),
    )
