"""Multimodal fusion encoders: single-stream merged attention and ALBEF-style cross-attention
(two-stream co-attention lives in :mod:`maskmm.nn.coattention`).

All share one call signature ``fusion(image, image_valid, text, text_valid, *, return_layers=())``
and return :class:`~maskmm.nn.outputs.FusionOutput`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from maskmm._checks import check_floating, check_same_device, check_tensor
from maskmm.attention import AttentionMask

from .blocks import post_norm_stack, run_blocks, set_attention_backend
from .config import FusionConfig
from .init import init_transformer_weights
from .layers import resolve_layers
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


class _FusionBase(nn.Module):
    """Shared parts: config check, input validation, backend switch, optional image projection.

    ``image_states`` tells whether ``FusionOutput.image`` holds states (``False`` only for the
    cross-attention fusion, which updates text tokens alone).
    """

    image_states: ClassVar[bool] = True

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
        return self.config.depth

    def set_attention_backend(self, backend: str) -> None:
        set_attention_backend(self, backend)

    def _make_image_proj(self) -> nn.Linear | None:
        c = self.config
        return nn.Linear(c.context_dim, c.dim) if c.context_dim != c.dim else None

    @property
    def _checkpointing(self) -> bool:
        return self.grad_checkpointing and self.training

    def forward(
        self,
        image: Tensor,
        image_valid: Tensor | None,
        text: Tensor,
        text_valid: Tensor,
        *,
        return_layers: Sequence[int] = (),
    ) -> FusionOutput:
        """Fuse image and text tokens.

        Args:
            image: ``[B, Li, image_dim]`` image tokens (``image_dim = config.context_dim``).
            image_valid: ``bool [B, Li]`` key validity of the image tokens, ``None`` = all valid.
            text: ``[B, Lt, dim]`` text tokens.
            text_valid: ``bool [B, Lt]`` key validity of the text tokens (padding False).
            return_layers: layer indices (negative from the end) whose states to return.
        Returns:
            :class:`FusionOutput`: text states ``[B, Lt, dim]``, image states ``[B, Li, dim]``
            (``None`` where ``image_states`` is False) and the states of ``return_layers``.
            Invalid keys are never attended; a query with no valid key to attend gets a zero
            attention output. Empty inputs (``B``, ``Li`` or ``Lt`` zero) are allowed.
        """
        _check_fusion_inputs(image, image_valid, text, text_valid, self.config.context_dim, self.dim)
        layers = resolve_layers("return_layers", return_layers, self.depth)
        return self._fuse(image, image_valid, text, text_valid, layers)

    def _fuse(
        self,
        image: Tensor,
        image_valid: Tensor | None,
        text: Tensor,
        text_valid: Tensor,
        layers: tuple[int, ...],
    ) -> FusionOutput:
        raise NotImplementedError


class CrossAttentionFusion(_FusionBase):
    """ALBEF fusion: each layer is a BERT post-norm layer with text self-attention, then
    cross-attention from the text (queries) to the image tokens (keys/values), then the MLP.
    Only text states are updated (``FusionOutput.image`` is ``None``). Text queries with no
    valid image key get a zero cross-attention output.

    ``layers[i]`` has ``attn``, ``norm1``, ``cross_attn``, ``norm_cross``, ``mlp``, ``norm2``.
    """

    image_states = False

    def __init__(self, config: FusionConfig) -> None:
        super().__init__(config)
        self.layers = post_norm_stack(config, context_dim=config.context_dim)
        self.apply(init_transformer_weights)

    def _fuse(
        self,
        image: Tensor,
        image_valid: Tensor | None,
        text: Tensor,
        text_valid: Tensor,
        layers: tuple[int, ...],
    ) -> FusionOutput:
        text_mask = AttentionMask.from_key_valid(text_valid)
        image_mask = None if image_valid is None else AttentionMask.from_key_valid(image_valid)
        x, hidden = run_blocks(
            self.layers,
            text,
            text_mask,
            context=image,
            context_mask=image_mask,
            return_layers=layers,
            checkpointing=self._checkpointing,
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
        self.image_proj = self._make_image_proj()
        self.modality_embed = nn.Parameter(torch.zeros(2, config.dim)) if config.modality_embedding else None
        self.layers = post_norm_stack(config)
        self.apply(init_transformer_weights)

    def _fuse(
        self,
        image: Tensor,
        image_valid: Tensor | None,
        text: Tensor,
        text_valid: Tensor,
        layers: tuple[int, ...],
    ) -> FusionOutput:
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
            checkpointing=self._checkpointing,
        )
        states = tuple(FusionLayerState(h[:, li:], h[:, :li]) for h in hidden)
        return FusionOutput(x[:, li:], x[:, :li], states)
