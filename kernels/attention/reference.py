"""Plain-PyTorch masked attention: the definition every backend is tested against.

Conventions (shared by every backend of ``maskmm.attention``):

- ``q``: ``[B, H, Lq, D]``, ``k``: ``[B, H, Lk, D]``, ``v``: ``[B, H, Lk, Dv]``.
- ``key_valid``: ``bool [B, Lk]``, ``True`` = the key may be attended.
- ``query_valid``: ``bool [B, Lq]``, ``False`` rows return zeros.
- A query row with no valid key returns zeros and passes zero gradient.
- ``dropout_mask``: ``bool [B, H, Lq, Lk]``, ``True`` = kept; kept probabilities
  are scaled by ``1 / (1 - dropout_p)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["attention_reference"]


def attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    key_valid: Tensor | None = None,
    query_valid: Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    dropout_mask: Tensor | None = None,
) -> Tensor:
    """Masked softmax attention computed in float32 (float64 for float64 inputs).

    Returns ``[B, H, Lq, Dv]`` in ``q.dtype``. Differentiable in ``q``, ``k``, ``v``.
    ``dropout_mask`` must be given when ``dropout_p > 0`` (the reference draws no
    random numbers itself, so that it can replay a kernel's exact mask).
    """
    if dropout_p > 0.0 and dropout_mask is None:
        raise ValueError("attention_reference: dropout_p > 0 needs an explicit dropout_mask")
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q.to(acc), k.to(acc).transpose(-1, -2)) * scale  # [B, H, Lq, Lk]
    if key_valid is not None:
        allowed = key_valid[:, None, None, :].expand_as(scores)
    else:
        allowed = torch.ones_like(scores, dtype=torch.bool)
    if query_valid is not None:
        allowed = allowed & query_valid[:, None, :, None]
    row_has_key = allowed.any(dim=-1, keepdim=True)
    # Rows without any allowed key get finite scores so softmax has no NaN; they are zeroed below.
    scores = scores.masked_fill(~allowed & row_has_key, float("-inf"))
    probs = torch.softmax(scores, dim=-1) * row_has_key
    if dropout_p > 0.0:
        probs = probs * dropout_mask / (1.0 - dropout_p)
    out = torch.matmul(probs, v.to(acc))
    return out.to(q.dtype)
