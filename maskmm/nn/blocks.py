"""Transformer blocks: pre-norm (ViT, decoders) and post-norm (BERT), each with optional
cross-attention, and the loop that runs a stack of them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .attention import MultiHeadAttention
from .layers import DropPath, Mlp, drop_path_rates

if TYPE_CHECKING:
    from maskmm.attention import AttentionMask

    from .config import FusionConfig, TextConfig

__all__ = [
    "PostNormBlock",
    "PreNormBlock",
    "call_block",
    "post_norm_stack",
    "run_blocks",
    "set_attention_backend",
]


class PreNormBlock(nn.Module):
    """``x + DP(attn(LN(x)))`` [``+ DP(cross(LN(x), context))``] ``+ DP(mlp(LN(x)))``.

    ``x [B, L, dim]``, ``context [B, Lc, context_dim]`` (only with ``context_dim``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path: float = 0.0,
        eps: float = 1e-6,
        context_dim: int | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = MultiHeadAttention(
            dim, num_heads, qkv_bias=qkv_bias, attn_dropout=attn_dropout, backend=backend
        )
        self.drop1 = nn.Dropout(dropout)
        if context_dim is not None:
            self.norm_cross = nn.LayerNorm(dim, eps=eps)
            self.cross_attn = MultiHeadAttention(
                dim,
                num_heads,
                context_dim=context_dim,
                qkv_bias=qkv_bias,
                attn_dropout=attn_dropout,
                backend=backend,
            )
            self.drop_cross = nn.Dropout(dropout)
        else:
            self.cross_attn = None
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout=dropout)
        self.drop_path = DropPath(drop_path)

    def forward(
        self,
        x: Tensor,
        mask: AttentionMask | None = None,
        context: Tensor | None = None,
        context_mask: AttentionMask | None = None,
    ) -> Tensor:
        x = x + self.drop_path(self.drop1(self.attn(self.norm1(x), mask)))
        if self.cross_attn is not None:
            x = x + self.drop_path(
                self.drop_cross(self.cross_attn(self.norm_cross(x), context_mask, context))
            )
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PostNormBlock(nn.Module):
    """BERT layer: ``x = LN(x + DP(drop(attn(x))))``; with ``context_dim`` also
    ``x = LN(x + DP(drop(cross(x, context))))``; then ``x = LN(x + DP(drop(fc2(GELU(fc1(x))))))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        intermediate_size: int,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path: float = 0.0,
        eps: float = 1e-12,
        context_dim: int | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, num_heads, attn_dropout=attn_dropout, backend=backend)
        self.drop1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        if context_dim is not None:
            self.cross_attn = MultiHeadAttention(
                dim, num_heads, context_dim=context_dim, attn_dropout=attn_dropout, backend=backend
            )
            self.drop_cross = nn.Dropout(dropout)
            self.norm_cross = nn.LayerNorm(dim, eps=eps)
        else:
            self.cross_attn = None
        self.mlp = Mlp(dim, intermediate_size, dropout=dropout, hidden_dropout=False)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.drop_path = DropPath(drop_path)

    def forward(
        self,
        x: Tensor,
        mask: AttentionMask | None = None,
        context: Tensor | None = None,
        context_mask: AttentionMask | None = None,
    ) -> Tensor:
        x = self.norm1(x + self.drop_path(self.drop1(self.attn(x, mask))))
        if self.cross_attn is not None:
            x = self.norm_cross(
                x + self.drop_path(self.drop_cross(self.cross_attn(x, context_mask, context)))
            )
        return self.norm2(x + self.drop_path(self.mlp(x)))


def post_norm_stack(config: TextConfig | FusionConfig, *, context_dim: int | None = None) -> nn.ModuleList:
    """``config.depth`` :class:`PostNormBlock` s built from a text or fusion config, with
    stochastic-depth rates rising linearly to ``config.drop_path``; with ``context_dim`` each
    block also cross-attends to a context of that width."""
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


def call_block(
    block: nn.Module,
    x: Tensor,
    mask: AttentionMask | None,
    context: Tensor | None = None,
    context_mask: AttentionMask | None = None,
    *,
    checkpointing: bool = False,
) -> Tensor:
    """``block(x, mask, context, context_mask)``; with ``checkpointing`` (and grad enabled) its
    activations are recomputed in the backward pass instead of kept. The masks are shared by
    every block (their cached backend objects are built once per batch)."""
    if checkpointing and torch.is_grad_enabled():

        def run(x: Tensor, context: Tensor | None) -> Tensor:
            return block(x, mask, context, context_mask)

        return checkpoint(run, x, context, use_reentrant=False)
    return block(x, mask, context, context_mask)


def run_blocks(
    blocks: Sequence[nn.Module],
    x: Tensor,
    mask: AttentionMask | None,
    *,
    context: Tensor | None = None,
    context_mask: AttentionMask | None = None,
    return_layers: Sequence[int] = (),
    checkpointing: bool = False,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Run ``blocks`` in order with the same masks; return the last output and the outputs of the
    (already validated, non-negative) ``return_layers`` in the order asked. With ``checkpointing``
    (and grad enabled) each block is recomputed in the backward pass."""
    wanted = set(return_layers)
    kept: dict[int, Tensor] = {}
    for i, block in enumerate(blocks):
        x = call_block(block, x, mask, context, context_mask, checkpointing=checkpointing)
        if i in wanted:
            kept[i] = x
    return x, tuple(kept[i] for i in return_layers)


def set_attention_backend(module: nn.Module, backend: str) -> None:
    """Set the ``masked_attention`` backend of every attention inside ``module``."""
    from .config import ATTN_BACKENDS

    if backend not in ATTN_BACKENDS:
        raise ValueError(f"backend must be one of {ATTN_BACKENDS}, got {backend!r}")
    for m in module.modules():
        if isinstance(m, MultiHeadAttention):
            m.backend = backend
