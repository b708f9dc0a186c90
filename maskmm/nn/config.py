"""Configuration dataclasses for the encoders, plus the ``tiny`` and ``base`` presets.

Every encoder is built from one of these dataclasses; :mod:`maskmm.nn.builders`
turns them into modules. Options shared by all encoders:

- ``attn_backend``: passed unchanged to :func:`maskmm.attention.masked_attention`
  (``"auto"``, ``"triton"``, ``"flex"``, ``"sdpa"``, ``"xformers"``, ``"reference"``).
- ``grad_checkpointing``: recompute each block in the backward pass
  (``torch.utils.checkpoint`` with ``use_reentrant=False``); only while training.
- ``dropout`` / ``attn_dropout`` / ``drop_path``: hidden-state dropout, dropout on the
  attention probabilities, and the largest stochastic-depth rate (linearly increasing
  from 0 over the depth).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, NamedTuple

__all__ = ["FusionConfig", "PresetConfigs", "TextConfig", "VisionConfig", "preset"]

ATTN_BACKENDS = ("auto", "triton", "flex", "sdpa", "xformers", "reference")
FUSION_KINDS = ("merged", "cross", "coattention")


def _positive(cls: str, **values: int | float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{cls}.{name} must be positive, got {value}")


def _rates(cls: str, **values: float) -> None:
    for name, value in values.items():
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{cls}.{name} must lie in [0, 1), got {value}")


def _heads(cls: str, dim: int, num_heads: int) -> None:
    if dim % num_heads != 0:
        raise ValueError(f"{cls}.dim ({dim}) must be divisible by {cls}.num_heads ({num_heads})")


def _backend(cls: str, backend: str) -> None:
    if backend not in ATTN_BACKENDS:
        raise ValueError(f"{cls}.attn_backend must be one of {ATTN_BACKENDS}, got {backend!r}")


@dataclass(frozen=True)
class VisionConfig:
    """ViT image encoder (pre-norm blocks, CLS token, learnable absolute position embeddings).

    ``image_size`` is the size the position table is laid out for; other sizes divisible
    by ``patch_size`` are accepted at run time (the table is resampled bicubically).
    """

    image_size: int | tuple[int, int] = 224
    patch_size: int = 16
    in_chans: int = 3
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    mask_token: bool = True
    attn_backend: str = "auto"
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        h, w = self.image_hw
        _positive("VisionConfig", image_height=h, image_width=w, patch_size=self.patch_size)
        _positive("VisionConfig", in_chans=self.in_chans, dim=self.dim, depth=self.depth)
        _positive("VisionConfig", num_heads=self.num_heads, mlp_ratio=self.mlp_ratio)
        _positive("VisionConfig", layer_norm_eps=self.layer_norm_eps)
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"VisionConfig.image_size {self.image_size} must be divisible by patch_size {self.patch_size}"
            )
        _heads("VisionConfig", self.dim, self.num_heads)
        _rates("VisionConfig", dropout=self.dropout, attn_dropout=self.attn_dropout, drop_path=self.drop_path)
        _backend("VisionConfig", self.attn_backend)

    @property
    def image_hw(self) -> tuple[int, int]:
        s = self.image_size
        return (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))

    @property
    def grid_size(self) -> tuple[int, int]:
        h, w = self.image_hw
        return h // self.patch_size, w // self.patch_size

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid_size
        return gh * gw


@dataclass(frozen=True)
class TextConfig:
    """BERT-style text encoder (post-norm blocks, learned absolute positions, token types)."""

    vocab_size: int = 30522
    dim: int = 768
    depth: int = 6
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position: int = 512
    type_vocab_size: int = 2
    pad_token_id: int = 0
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1
    attn_dropout: float = 0.1
    drop_path: float = 0.0
    attn_backend: str = "auto"
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        _positive("TextConfig", vocab_size=self.vocab_size, dim=self.dim, depth=self.depth)
        _positive("TextConfig", num_heads=self.num_heads, intermediate_size=self.intermediate_size)
        _positive("TextConfig", max_position=self.max_position, type_vocab_size=self.type_vocab_size)
        _positive("TextConfig", layer_norm_eps=self.layer_norm_eps)
        _heads("TextConfig", self.dim, self.num_heads)
        _rates("TextConfig", dropout=self.dropout, attn_dropout=self.attn_dropout, drop_path=self.drop_path)
        _backend("TextConfig", self.attn_backend)
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"TextConfig.pad_token_id must lie in [0, {self.vocab_size}), got {self.pad_token_id}"
            )


@dataclass(frozen=True)
class FusionConfig:
    """Multimodal fusion encoder.

    ``kind="merged"``: single stream over ``[image; text]`` (states at both modalities).
    ``kind="cross"``: ALBEF-style text self-attention + cross-attention to image tokens.
    ``kind="coattention"``: two streams (text and image), each with self-attention and
    cross-attention to the other (states at both modalities).
    ``image_dim`` is the width of the incoming image tokens (``None`` = ``dim``); the
    merged and co-attention fusions project them to ``dim``, the cross fusion reads them as
    keys/values. ``modality_embedding`` (merged only) adds a learned, zero-initialised
    vector per modality to the incoming tokens.
    """

    kind: Literal["merged", "cross", "coattention"] = "merged"
    dim: int = 768
    depth: int = 6
    num_heads: int = 12
    intermediate_size: int = 3072
    image_dim: int | None = None
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1
    attn_dropout: float = 0.1
    drop_path: float = 0.0
    modality_embedding: bool = True
    attn_backend: str = "auto"
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.kind not in FUSION_KINDS:
            raise ValueError(f"FusionConfig.kind must be one of {FUSION_KINDS}, got {self.kind!r}")
        _positive("FusionConfig", dim=self.dim, depth=self.depth, num_heads=self.num_heads)
        _positive(
            "FusionConfig", intermediate_size=self.intermediate_size, layer_norm_eps=self.layer_norm_eps
        )
        if self.image_dim is not None:
            _positive("FusionConfig", image_dim=self.image_dim)
        _heads("FusionConfig", self.dim, self.num_heads)
        _rates("FusionConfig", dropout=self.dropout, attn_dropout=self.attn_dropout, drop_path=self.drop_path)
        _backend("FusionConfig", self.attn_backend)

    @property
    def context_dim(self) -> int:
        return self.dim if self.image_dim is None else self.image_dim


class PresetConfigs(NamedTuple):
    vision: VisionConfig
    text: TextConfig
    fusion: FusionConfig


def preset(name: str, **overrides: object) -> PresetConfigs:
    """Named configurations.

    - ``"tiny"``: the encoders of :class:`~maskmm.nn.encoders_config.EncodersConfig`'s defaults (the
      one tiny configuration of the project, also the recipes' ``tiny`` presets): 64 px images, patch
      16 (16 patches), width 128, 4 vision layers, 2 text + 2 fusion layers, vocabulary 1024, no
      dropout. For tests and CPU runs.
    - ``"base"``: ViT-B/16 at 224 px + BERT-base split 6 (text) + 6 (fusion), as ALBEF.

    ``overrides`` replace fields of all three configs that have them (e.g.
    ``attn_backend="sdpa"``, ``grad_checkpointing=True``).
    """
    if name == "tiny":
        from .encoders_config import EncodersConfig

        out = EncodersConfig().to_presets(vocab_size=1024)
    elif name == "base":
        out = PresetConfigs(VisionConfig(), TextConfig(), FusionConfig())
    else:
        raise ValueError(f"preset name must be 'tiny' or 'base', got {name!r}")
    if not overrides:
        return out
    fields = [{f.name for f in dataclasses.fields(c)} for c in out]
    unknown = set(overrides) - set().union(*fields)
    if unknown:
        raise ValueError(f"preset overrides name unknown fields: {sorted(unknown)}")
    return PresetConfigs(
        *(
            dataclasses.replace(c, **{k: v for k, v in overrides.items() if k in f})
            for c, f in zip(out, fields)
        )
    )
