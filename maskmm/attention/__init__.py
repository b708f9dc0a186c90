"""Masked attention: one public op, several backends.

``masked_attention(q, k, v, mask)`` computes softmax attention over a padded batch where
``mask`` (an :class:`AttentionMask`, built once per batch and shared by every layer) says which
keys may be attended and, optionally, which queries are valid. Rows with an invalid query
or without any valid key are zeros with zero gradient, on every backend.
``masked_attention_varlen`` does the same over packed sequences (``cu_seqlens``).

Backends: ``triton`` (maskmm's fused kernel, CUDA), ``flex`` (compiled FlexAttention),
``sdpa`` (PyTorch SDPA, any device), ``xformers`` (if installed and loadable),
``reference`` (plain math). ``backend="auto"`` picks the fastest able one; :func:`explain`
tells why a backend cannot run a call.
"""

from __future__ import annotations

from .convert import VarlenSpec, cu_seqlens_from_seqlens, varlen_from_xformers_bias
from .dispatch import (
    BACKEND_NAMES,
    available_backends,
    explain,
    masked_attention,
    masked_attention_varlen,
    select_backend,
)
from .mask import AttentionMask
from .module import MaskedAttention

__all__ = [
    "BACKEND_NAMES",
    "AttentionMask",
    "MaskedAttention",
    "VarlenSpec",
    "available_backends",
    "cu_seqlens_from_seqlens",
    "explain",
    "masked_attention",
    "masked_attention_varlen",
    "select_backend",
    "varlen_from_xformers_bias",
]
