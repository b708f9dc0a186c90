"""Packed (``cu_seqlens``) <-> padded layouts, with index ops only (no host sync).

A packed tensor ``x [T, H, D]`` holds the tokens of ``B`` sequences back to back; sequence
``b`` occupies rows ``cu_seqlens[b] .. cu_seqlens[b+1]-1``. The padded layout is
``[B, H, max_seqlen, D]`` with zeros beyond each length.

Values are not checked here (that needs a host read, done once per call by
:func:`maskmm.attention.masked_attention_varlen`). They cannot cause an out-of-bounds access
either: a row that falls outside the padded layout (before ``cu_seqlens[0]``, past
``max_seqlen`` rows of its sequence, or any row when ``B = 0``) goes to a spill slot that is
never read, and reads back as zeros. Offsets that break the contract (non-decreasing,
``cu_seqlens[0] = 0``, ``cu_seqlens[-1] = T``, lengths ``<= max_seqlen``) thus give wrong
numbers, never an index error or a device-side assert.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["packed_positions", "pad_packed", "unpad_to_packed"]


def packed_positions(cu_seqlens: Tensor, total: int, max_seqlen: int) -> tuple[Tensor, Tensor]:
    """Where each packed row ``t < total`` lives in the padded layout.

    Returns ``(sample long [T], pos long [T])``: ``pos`` in ``[0, max_seqlen)`` for a row of the
    layout, ``pos = max_seqlen`` (the spill slot) for a row outside it. ``sample`` is in
    ``[0, max(B - 1, 0)]``.
    """
    cu = cu_seqlens.to(torch.int64)
    t = torch.arange(total, device=cu.device)
    sample = torch.searchsorted(cu[1:].contiguous(), t, right=True)
    sample = sample.clamp(max=max(cu.shape[0] - 2, 0))
    pos = t - cu[sample]
    placed = (pos >= 0) & (pos < max_seqlen) & (sample < cu.shape[0] - 1)
    return sample, torch.where(placed, pos, max_seqlen)


def _flat_index(sample: Tensor, pos: Tensor, batch: int, max_seqlen: int) -> Tensor:
    """Row of ``(sample, pos)`` in a ``[batch * max_seqlen + 1]`` buffer; the last row is the spill slot."""
    spill = pos >= max_seqlen
    return torch.where(spill, batch * max_seqlen, sample * max_seqlen + pos.clamp(max=max(max_seqlen - 1, 0)))


def pad_packed(x: Tensor, sample: Tensor, pos: Tensor, batch: int, max_seqlen: int) -> Tensor:
    """``x [T, H, D] -> [B, H, max_seqlen, D]`` (zeros at padding); differentiable.

    ``sample``/``pos`` from :func:`packed_positions`; rows at the spill slot are dropped (they
    receive zero gradient).
    """
    _, h, d = x.shape
    buf = x.new_zeros(batch * max_seqlen + 1, h, d)
    buf = buf.index_put((_flat_index(sample, pos, batch, max_seqlen),), x)
    return buf[: batch * max_seqlen].view(batch, max_seqlen, h, d).transpose(1, 2)


def unpad_to_packed(x: Tensor, sample: Tensor, pos: Tensor) -> Tensor:
    """``x [B, H, L, D] -> [T, H, D]``, the rows at ``(sample, pos)``; differentiable.

    Rows at the spill slot (``pos = L``) are zeros with zero gradient.
    """
    b, h, length, d = x.shape
    if b * length == 0:
        return x.new_zeros(sample.shape[0], h, d)
    spill = pos >= length
    out = x.transpose(1, 2)[sample, pos.clamp(max=length - 1)]
    return out.masked_fill(spill[:, None, None], 0.0)
