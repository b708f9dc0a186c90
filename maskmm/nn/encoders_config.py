"""One config section for the three encoders of an image-text model (vision, text, fusion), shared by
every recipe (the ``model`` section), with its builder.

Its defaults are the ``tiny`` encoders (64 px, patch 16, width 128, 4 vision + 2 text + 2 fusion
layers): the one tiny configuration of the project, also behind :func:`maskmm.nn.preset`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import nn

from .config import FusionConfig, PresetConfigs, TextConfig, VisionConfig

__all__ = ["EncodersConfig", "build_encoders"]


def _positive(path: str, v: float, *, zero_ok: bool = False) -> None:
    if v < 0 or (v == 0 and not zero_ok):
        raise ValueError(f"config field {path!r} must be {'>= 0' if zero_ok else '> 0'}, got {v}")


@dataclass
class EncodersConfig:
    """Encoder sizes. ``vocab_size = 0`` means: take it from the tokenizer.

    ``fusion``: ``"merged"`` (single-stream self-attention over ``[image; text]``: states at image and
    text positions) or ``"cross"`` (ALBEF: text queries cross-attend to image tokens).
    ``init``: ``"bert"`` = truncated normal with std 0.02 everywhere (BERT / ViT); ``"xavier"``
    re-initialises the ``Linear`` layers of the three encoders Xavier-uniform
    (:func:`maskmm.nn.init.init_linear_xavier`), which lets narrow encoders trained from scratch
    leave the initial plateau sooner (ITM especially).

    ``vision_init``: a local ViT / DeiT checkpoint (timm or Hugging Face layout; file or folder) loaded
    into the image encoder, its position table resampled to this grid
    (:func:`maskmm.nn.weights.import_vit`). ``text_init``: a local Hugging Face BERT folder or file:
    layers ``0 .. text_depth - 1`` into the text encoder and the next ``fusion_depth`` into the fusion
    encoder, as ALBEF splits ``bert-base`` 6 + 6 (:func:`maskmm.nn.weights.import_bert`; cross-attention
    weights absent from BERT stay freshly initialised, as ALBEF's). Missing and unexpected keys are
    reported on stderr. Nothing is ever downloaded.
    """

    image_size: int = 64
    patch_size: int = 16
    vision_dim: int = 128
    vision_depth: int = 4
    vision_heads: int = 4
    text_dim: int = 128
    text_depth: int = 2
    text_heads: int = 4
    fusion: Literal["merged", "cross"] = "merged"
    fusion_depth: int = 2
    fusion_heads: int = 4
    mlp_ratio: float = 2.0
    vocab_size: int = 0
    max_text_len: int = 32
    embed_dim: int = 64
    dropout: float = 0.0
    drop_path: float = 0.0
    attention_backend: str = "auto"
    grad_checkpointing: bool = False
    init: Literal["bert", "xavier"] = "xavier"
    vision_init: str = ""
    text_init: str = ""

    def check(self, p: str = "model.") -> None:
        """Raise ``ValueError`` naming ``<p><field>`` for a value out of range."""
        for name in (
            "image_size",
            "patch_size",
            "vision_dim",
            "vision_depth",
            "vision_heads",
            "text_dim",
            "text_depth",
            "text_heads",
            "fusion_depth",
            "fusion_heads",
            "max_text_len",
            "embed_dim",
        ):
            _positive(f"{p}{name}", getattr(self, name))
        _positive(f"{p}vocab_size", self.vocab_size, zero_ok=True)
        _positive(f"{p}mlp_ratio", self.mlp_ratio)
        for name in ("dropout", "drop_path"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"config field '{p}{name}' must lie in [0, 1), got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"config field '{p}image_size' ({self.image_size}) must be divisible by "
                f"'{p}patch_size' ({self.patch_size})"
            )
        for prefix, dim, heads in (
            ("vision", self.vision_dim, self.vision_heads),
            ("text", self.text_dim, self.text_heads),
            ("fusion", self.text_dim, self.fusion_heads),
        ):
            if dim % heads:
                raise ValueError(f"config field '{p}{prefix}_heads' ({heads}) must divide the width ({dim})")
        for name in ("vision_init", "text_init"):
            path = getattr(self, name)
            if path and not Path(path).exists():
                raise ValueError(f"config field '{p}{name}' = {path!r}: no such file or folder")

    @property
    def grid(self) -> int:
        """Patches per image side."""
        return self.image_size // self.patch_size

    def to_presets(self, vocab_size: int, pad_id: int = 0, *, mask_token: bool = True) -> PresetConfigs:
        """The ``maskmm.nn`` configs of the three encoders (``mask_token``: the ViT's learnt mask token)."""
        common = dict(
            dropout=self.dropout,
            attn_dropout=self.dropout,
            drop_path=self.drop_path,
            attn_backend=self.attention_backend,
            grad_checkpointing=self.grad_checkpointing,
        )
        hidden = round(self.text_dim * self.mlp_ratio)
        vision = VisionConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            dim=self.vision_dim,
            depth=self.vision_depth,
            num_heads=self.vision_heads,
            mlp_ratio=self.mlp_ratio,
            mask_token=mask_token,
            **common,
        )
        text = TextConfig(
            vocab_size=vocab_size,
            dim=self.text_dim,
            depth=self.text_depth,
            num_heads=self.text_heads,
            intermediate_size=hidden,
            max_position=self.max_text_len,
            pad_token_id=pad_id,
            **common,
        )
        fusion = FusionConfig(
            kind=self.fusion,
            dim=self.text_dim,
            depth=self.fusion_depth,
            num_heads=self.fusion_heads,
            intermediate_size=hidden,
            image_dim=self.vision_dim,
            **common,
        )
        return PresetConfigs(vision, text, fusion)


def build_encoders(
    cfg: EncodersConfig, vocab_size: int, pad_id: int = 0, *, mask_token: bool = True, fusion: bool = True
) -> tuple[nn.Module, nn.Module, nn.Module | None]:
    """The vision, text and (with ``fusion``) fusion encoders of ``cfg``, initialised as ``cfg.init`` says."""
    from .builders import build_fusion_encoder, build_text_encoder, build_vision_encoder
    from .init import init_linear_xavier
    from .weights import import_bert, import_vit

    v, t, f = cfg.to_presets(vocab_size, pad_id, mask_token=mask_token)
    parts = [build_vision_encoder(v), build_text_encoder(t), build_fusion_encoder(f) if fusion else None]
    if cfg.init == "xavier":
        for part in parts:
            if part is not None:
                part.apply(init_linear_xavier)
    if cfg.vision_init:
        _report("model.vision_init", cfg.vision_init, import_vit(cfg.vision_init, parts[0]))
    if cfg.text_init:
        report = import_bert(cfg.text_init, text_encoder=parts[1], fusion=parts[2])
        _report("model.text_init", cfg.text_init, report)
    return parts[0], parts[1], parts[2]


def _report(field: str, path: str, report: object) -> None:
    def some(keys: list[str]) -> str:
        return f"{len(keys)}" + (
            f" ({', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''})" if keys else ""
        )

    print(
        f"{field}: loaded {path}; missing {some(report.missing_keys)}; unexpected "
        f"{some(report.unexpected_keys)}; resampled {some(report.resampled_keys)}",
        file=sys.stderr,
    )
