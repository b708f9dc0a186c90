"""Multimodal fusion encoders: single-stream merged attention and ALBEF-style cross-attention.

Both share one call signature and return :class:`~maskmm.nn.outputs.FusionOutput`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from maskmm._checks import check_floating, check_same_device, check_tensor
from maskmm.attention import AttentionMask

from .blocks import PostNormBlock, run_blocks, set_attention_backend
from .config import FusionConfig
from .init import init_transformer_weights
from .layers import drop_path_rates, resolve_layers
from .outputs import FusionLayerState, FusionOutput

__all__ = ["CrossAttentionFusion", "MergedFusion"]


def _check_fusion_inputs(
    image: Tensor, image_valid: Tensor | None, text: Tensor, text_valid: Tensor, image_dim: int, dim: int
) -> None:
    check_floating("text", text, shape=(None, None, dim))
    b, lt = text.shape[:2]
    check_tensor("text_valid", text_valid, shape=(b, lt), dtype=torch.bool)
    check_floating("image", image, shape=(b, None, image_dim))
    if image_valid is not None:
        check_tensor("image_valid", image_valid, shape=(b, image.shape[1]), dtype=torch.bool)
    check_same_device(text=text, text_valid=text_valid, image=image, image_valid=image_valid)


def _post_norm_layers(config: FusionConfig, context_dim: int | None) -> nn.ModuleList:
    return nn.ModuleList(
        PostNormBlock(
            config.dim,
            config.num_heads,
            intermediate_size=config.intermediate_size,
            dropout=config.dropout,
            attn_dropout=config.attn_dropout,
            drop_path=rate,
            eps=config.layer_norm_eps,
            context_dim=context_dim,
            backend=config.attn_backend,
        )
        for rate in drop_path_rates(config.drop_path, config.depth)
    )


class _FusionBase(nn.Module):
    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        if not isinstance(config, FusionConfig):
            raise TypeError(f"config must be a FusionConfig, got {type(config).__name__}")
        self.config = config
        self.grad_checkpointing = config.grad_checkpointing

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def depth(self) -> int:
        return len(self.layers)

    def set_attention_backend(self, backend: str) -> None:
        set_attention_backend(self, backend)


class CrossAttentionFusion(_FusionBase):
    """ALBEF fusion: each layer is a BERT post-norm layer with text self-attention, then
    cross-attention from the text (queries) to the image tokens (keys/values), then the MLP.
    Only text states are updated (``FusionOutput.image`` is ``None``).

    ``layers[i]`` has ``attn``, ``norm1``, ``cross_attn``, ``norm_cross``, ``mlp``, ``norm2``.
    """

    def __init__(self, config: FusionConfig) -> None:
        super().__init__(config)
        self.layers = _post_norm_layers(config, config.context_dim)
        self.apply(init_transformer_weights)

    def forward(
        self,
        image: Tensor,
        image_valid: Tensor | None,
        text: Tensor,
        text_valid: Tensor,
        *,
        return_layers: Sequence[int] = (),
    ) -> FusionOutput:
        """``image [B, Li, image_dim]``, ``image_valid bool [B, Li]`` or ``None`` (all valid),
        ``text [B, Lt, D]``, ``text_valid bool [B, Lt]``. Returns text states ``[B, Lt, D]``.
        Text queries whose image row has no valid key get a zero cross-attention output."""
        _check_fusion_inputs(image, image_valid, text, text_valid, self.config.context_dim, self.dim)
        layers = resolve_layers("return_layers", return_layers, self.depth)
        text_mask = AttentionMask.from_key_valid(text_valid)
        image_mask = None if image_valid is None else AttentionMask.from_key_valid(image_valid)
        x, hidden = run_blocks(
            self.layers,
            text,
            text_mask,
            context=image,
            context_mask=image_mask,
            return_layers=layers,
            checkpointing=self.grad_checkpointing and self.training,
        )
        return FusionOutput(x, None, tuple(FusionLayerState(h, None) for h in hidden))


class MergedFusion(_FusionBase):
    """Single-stream fusion: BERT post-norm layers over ``[image; text]`` with one key-validity
    mask (image validity, then text padding), producing states at image and text positions.

    Image tokens of width ``image_dim != dim`` pass through ``image_proj`` (Linear) first. With
    ``config.modality_embedding``, ``modality_embed[0]`` is added to image tokens and
    ``modality_embed[1]`` to text tokens (zero-initialised).
    """

    def __init__(self, config: FusionConfig) -> None:
        super().__init__(config)
        self.image_proj = (
            nn.Linear(config.context_dim, config.dim) if config.context_dim != config.dim else None
        )
        self.modality_embed = nn.Parameter(torch.zeros(2, config.dim)) if config.modality_embedding else None
        self.layers = _post_norm_layers(config, None)
        self.apply(init_transformer_weights)

    def forward(
        self,
        image: Tensor,
        image_valid: Tensor | None,
        text: Tensor,
        text_valid: Tensor,
        *,
        return_layers: Sequence[int] = (),
    ) -> FusionOutput:
        """``image [B, Li, image_dim]``, ``image_valid bool [B, Li]`` or ``None`` (all valid),
        ``text [B, Lt, D]``, ``text_valid bool [B, Lt]``. Returns text ``[B, Lt, D]`` and image
        ``[B, Li, D]`` states; invalid keys are never attended."""
        _check_fusion_inputs(image, image_valid, text, text_valid, self.config.context_dim, self.dim)
        layers = resolve_layers("return_layers", return_layers, self.depth)
        b, li = image.shape[:2]
        if self.image_proj is not None:
            image = self.image_proj(image)
        if self.modality_embed is not None:
            image = image + self.modality_embed[0].to(image.dtype)
            text = text + self.modality_embed[1].to(text.dtype)
        if image_valid is None:
            image_valid = torch.ones(b, li, dtype=torch.bool, device=text_valid.device)
        mask = AttentionMask.from_key_valid(torch.cat([image_valid, text_valid], dim=1))
        x = torch.cat([image, text.to(image.dtype)], dim=1)
        x, hidden = run_blocks(
            self.layers,
            x,
            mask,
            return_layers=layers,
            checkpointing=self.grad_checkpointing and self.training,
        )
        states = tuple(FusionLayerState(h[:, li:], h[:, :li]) for h in hidden)
        return FusionOutput(x[:, li:], x[:, :li], states)
