"""Prediction decoder for masked-modeling targets (MLP or a small transformer)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from maskmm._checks import check_floating, check_same_device, check_tensor
from maskmm.attention import AttentionMask

from .blocks import PreNormBlock, run_blocks, set_attention_backend
from .init import init_transformer_weights
from .layers import Mlp, drop_path_rates

__all__ = ["PredictionDecoder"]


class PredictionDecoder(nn.Module):
    """Predict targets from (mask-token-filled) states: ``[B, L, in_dim] -> [B, L, out_dim]``.

    - ``depth == 0``: an MLP ``in_dim -> hidden -> out_dim`` applied per token (``dim`` is the
      hidden width, default ``in_dim``); no attention.
    - ``depth > 0``: ``Linear(in_dim, dim)`` (skipped when equal), ``depth`` pre-norm blocks,
      final LayerNorm, ``Linear(dim, out_dim)``. With ``cross_attend`` each block also attends
      to ``context [B, Lc, context_dim]`` (e.g. the other modality's states), restricted to
      ``context_valid``.

    Args:
        in_dim, out_dim: input and target widths.
        dim: decoder width (default ``in_dim``).
        depth: number of transformer blocks (0 = MLP).
        num_heads: heads per attention.
        cross_attend: add cross-attention to a context in every block (needs ``depth > 0``).
        context_dim: width of the context (default ``dim``).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        dim: int | None = None,
        depth: int = 0,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        cross_attend: bool = False,
        context_dim: int | None = None,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path: float = 0.0,
        eps: float = 1e-6,
        attn_backend: str = "auto",
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        if cross_attend and depth == 0:
            raise ValueError("cross_attend needs depth > 0 (an MLP decoder has no attention)")
        dim = in_dim if dim is None else dim
        self.in_dim, self.out_dim, self.dim, self.depth = in_dim, out_dim, dim, depth
        self.cross_attend = cross_attend
        self.context_dim = (context_dim or dim) if cross_attend else None
        self.grad_checkpointing = grad_checkpointing
        if depth == 0:
            self.mlp = Mlp(in_dim, dim, out_dim, dropout=dropout)
        else:
            self.embed = nn.Linear(in_dim, dim) if in_dim != dim else nn.Identity()
            self.blocks = nn.ModuleList(
                PreNormBlock(
                    dim,
                    num_heads,
                    mlp_ratio=mlp_ratio,
                    dropout=dropout,
                    attn_dropout=attn_dropout,
                    drop_path=rate,
                    eps=eps,
                    context_dim=self.context_dim,
                    backend=attn_backend,
                )
                for rate in drop_path_rates(drop_path, depth)
            )
            self.norm = nn.LayerNorm(dim, eps=eps)
            self.head = nn.Linear(dim, out_dim)
        self.apply(init_transformer_weights)

    def set_attention_backend(self, backend: str) -> None:
        set_attention_backend(self, backend)

    def forward(
        self,
        x: Tensor,
        valid: Tensor | None = None,
        *,
        context: Tensor | None = None,
        context_valid: Tensor | None = None,
    ) -> Tensor:
        """``x [B, L, in_dim]``; ``valid bool [B, L]`` key validity of ``x`` (``None`` = all);
        ``context [B, Lc, context_dim]`` and ``context_valid bool [B, Lc]`` when cross-attending."""
        check_floating("x", x, shape=(None, None, self.in_dim))
        b, length = x.shape[:2]
        if valid is not None:
            check_tensor("valid", valid, shape=(b, length), dtype=torch.bool)
        if self.cross_attend:
            if context is None:
                raise ValueError("context is required: this decoder was built with cross_attend=True")
            check_floating("context", context, shape=(b, None, self.context_dim))
            if context_valid is not None:
                check_tensor("context_valid", context_valid, shape=(b, context.shape[1]), dtype=torch.bool)
        elif context is not None or context_valid is not None:
            raise ValueError("context was given but this decoder was built with cross_attend=False")
        check_same_device(x=x, valid=valid, context=context, context_valid=context_valid)
        if self.depth == 0:
            return self.mlp(x)
        mask = None if valid is None else AttentionMask.from_key_valid(valid)
        ctx_mask = None if context_valid is None else AttentionMask.from_key_valid(context_valid)
        h, _ = run_blocks(
            self.blocks,
            self.embed(x),
            mask,
            context=context,
            context_mask=ctx_mask,
            checkpointing=self.grad_checkpointing and self.training,
        )
        return self.head(self.norm(h))
