"""Multi-head attention module: projections around :func:`maskmm.attention.masked_attention`.

Every attention in :mod:`maskmm.nn` goes through this module, so masks, backends and
dropout behave the same everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from maskmm.attention import masked_attention

if TYPE_CHECKING:
    from maskmm.attention import AttentionMask

__all__ = ["MultiHeadAttention"]


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention ``[B, Lq, dim] -> [B, Lq, dim]``.

    Self-attention (``context_dim is None``) holds one fused ``qkv`` projection
    ``dim -> 3 * dim``; cross-attention holds ``q`` (``dim -> dim``) and ``kv``
    (``context_dim -> 2 * dim``). Both end in ``proj`` (``dim -> dim``).

    Args:
        dim: token width (queries, and keys/values for self-attention).
        num_heads: heads; ``dim`` must be divisible by it.
        context_dim: width of the key/value tokens for cross-attention.
        qkv_bias: bias on the input projections.
        attn_dropout: dropout on the attention probabilities (training only).
        backend: backend name passed to ``masked_attention``; may be changed later.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        context_dim: int | None = None,
        qkv_bias: bool = True,
        attn_dropout: float = 0.0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.is_cross = context_dim is not None
        if self.is_cross:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(context_dim, 2 * dim, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_dropout = float(attn_dropout)
        self.backend = backend

    def _heads(self, x: Tensor, n: int) -> tuple[Tensor, ...]:
        # [B, L, n * dim] -> n tensors [B, H, L, Dh] (strided views, no copy)
        b, length, _ = x.shape
        return x.view(b, length, n, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x: Tensor, mask: AttentionMask | None = None, context: Tensor | None = None) -> Tensor:
        """``x [B, Lq, dim]``; ``context [B, Lk, context_dim]`` for cross-attention; ``mask`` an
        :class:`~maskmm.attention.AttentionMask` over the keys (and optionally queries)."""
        if self.is_cross:
            if context is None:
                raise ValueError("context is required for cross-attention")
            (q,) = self._heads(self.q(x), 1)
            k, v = self._heads(self.kv(context), 2)
        else:
            q, k, v = self._heads(self.qkv(x), 3)
        out = masked_attention(
            q, k, v, mask, dropout_p=self.attn_dropout if self.training else 0.0, backend=self.backend
        )
        b, _, lq, _ = out.shape
        return self.proj(out.transpose(1, 2).reshape(b, lq, self.dim))

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, cross={self.is_cross}, backend={self.backend!r}"
