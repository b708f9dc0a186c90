"""Packed (``cu_seqlens``) <-> padded layouts, with index ops only (no host sync).

A packed tensor ``x [T, H, D]`` holds the tokens of ``B`` sequences back to back; sequence
``b`` occupies rows ``cu_seqlens[b] .. cu_seqlens[b+1]-1``. The padded layout is
``[B, H, max_seqlen, D]`` with zeros beyond each length.

Values are not range-checked (that would need a host sync): ``cu_seqlens`` must be
non-decreasing with ``cu_seqlens[-1] == T`` and every length ``<= max_seqlen``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["packed_positions", "pad_packed", "unpad_to_packed"]


def packed_positions(cu_seqlens: Tensor, total: int) -> tuple[Tensor, Tensor]:
    """For each packed row ``t < total``: ``(sample index long [T], position in sample long [T])``."""
    cu = cu_seqlens.to(torch.int64)
    t = torch.arange(total, device=cu.device)
    sample = torch.searchsorted(cu[1:].contiguous(), t, right=True)
    sample = sample.clamp(max=max(cu.shape[0] - 2, 0))
    return sample, t - cu[sample]


def pad_packed(x: Tensor, sample: Tensor, pos: Tensor, batch: int, max_seqlen: int) -> Tensor:
    """``x [T, H, D] -> [B, H, max_seqlen, D]`` (zeros at padding); differentiable."""
    _, h, d = x.shape
    out = x.new_zeros(batch, max_seqlen, h, d)
    out = out.index_put((sample, pos), x)
    return out.transpose(1, 2)


def unpad_to_packed(x: Tensor, sample: Tensor, pos: Tensor) -> Tensor:
    """``x [B, H, L, D] -> [T, H, D]``, the rows at ``(sample, pos)``; differentiable."""
    return x.transpose(1, 2)[sample, pos]
