"""Encoders, fusion modules, heads and builders for masked multimodal pretraining.

Every attention goes through :func:`maskmm.attention.masked_attention`; each encoder builds
one :class:`~maskmm.attention.AttentionMask` per forward and shares it across its layers.
Pretrained weights (Hugging Face BERT, timm / Hugging Face ViT and DeiT) are imported with
:mod:`maskmm.nn.weights`.
"""

from .attention import MultiHeadAttention
from .blocks import PostNormBlock, PreNormBlock, set_attention_backend
from .builders import (
    build_encoders,
    build_fusion_encoder,
    build_mlm_head,
    build_text_encoder,
    build_vision_encoder,
)
from .coattention import CoAttentionFusion
from .config import FusionConfig, PresetConfigs, TextConfig, VisionConfig, preset
from .decoder import PredictionDecoder
from .fusion import CrossAttentionFusion, MergedFusion
from .heads import MaskedTokenHead, MatchingHead, ProjectionHead, RegressionHead
from .layers import DropPath, Mlp, drop_path
from .outputs import EncoderOutput, FusionLayerState, FusionOutput
from .patch_embed import PatchEmbed
from .pos_embed import resample_pos_embed
from .text import TextEmbeddings, TextEncoder
from .vit import VisionTransformer

__all__ = [
    "CoAttentionFusion",
    "CrossAttentionFusion",
    "DropPath",
    "EncoderOutput",
    "FusionConfig",
    "FusionLayerState",
    "FusionOutput",
    "MaskedTokenHead",
    "MatchingHead",
    "MergedFusion",
    "Mlp",
    "MultiHeadAttention",
    "PatchEmbed",
    "PostNormBlock",
    "PreNormBlock",
    "PredictionDecoder",
    "PresetConfigs",
    "ProjectionHead",
    "RegressionHead",
    "TextConfig",
    "TextEmbeddings",
    "TextEncoder",
    "VisionConfig",
    "VisionTransformer",
    "build_encoders",
    "build_fusion_encoder",
    "build_mlm_head",
    "build_text_encoder",
    "build_vision_encoder",
    "drop_path",
    "preset",
    "resample_pos_embed",
    "set_attention_backend",
]
