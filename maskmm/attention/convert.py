"""Conversions from the mask descriptions of other libraries to maskmm's.

- xformers: ``BlockDiagonalMask.from_seqlens(q_seqlen, kv_seqlen)`` describes a *packed*
  batch by per-sample length lists. :func:`cu_seqlens_from_seqlens` and
  :func:`varlen_from_xformers_bias` give the ``cu_seqlens`` arguments of
  :func:`maskmm.attention.masked_attention_varlen`; :meth:`AttentionMask.from_seqlens` /
  :meth:`AttentionMask.from_xformers_bias` give the equivalent *padded* mask.
  Bias objects are read duck-typed, so xformers need not be installed.
- FlexAttention: a padding ``mask_mod`` / ``BlockMask`` (``mask_mod(b, h, q, kv) =
  key_valid[b, kv] & query_valid[b, q]``) or lengths (``kv_idx < lengths[b]``) map to
  :meth:`AttentionMask.from_block_mask`, :meth:`AttentionMask.from_mask_mod` and
  :meth:`AttentionMask.from_lengths`.

Everything here runs once per batch at construction time, never inside attention.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .mask import AttentionMask

__all__ = ["VarlenSpec", "cu_seqlens_from_seqlens", "varlen_from_xformers_bias"]


class VarlenSpec(NamedTuple):
    """Packed-layout arguments of :func:`maskmm.attention.masked_attention_varlen`."""

    cu_seqlens_q: Tensor  # int32 [B + 1]
    cu_seqlens_k: Tensor  # int32 [B + 1]
    max_seqlen_q: int
    max_seqlen_k: int


def _check_seqlens(name: str, seqlens: object) -> list[int]:
    if isinstance(seqlens, Tensor) or not isinstance(seqlens, Sequence):
        raise TypeError(f"{name} must be a sequence of ints, got {type(seqlens).__name__}")
    out = []
    for i, s in enumerate(seqlens):
        if isinstance(s, bool) or not isinstance(s, int):
            raise TypeError(f"{name}[{i}] must be an int, got {type(s).__name__}")
        if s < 0:
            raise ValueError(f"{name}[{i}] must be >= 0, got {s}")
        out.append(s)
    return out


def cu_seqlens_from_seqlens(
    seqlens: Sequence[int], *, device: torch.device | str | None = None
) -> tuple[Tensor, int]:
    """``[3, 5, 1] -> (tensor([0, 3, 8, 9], int32), 5)``: cumulative starts and the max length."""
    lens = _check_seqlens("seqlens", seqlens)
    cu = [0]
    for s in lens:
        cu.append(cu[-1] + s)
    return torch.tensor(cu, dtype=torch.int32, device=device), max(lens, default=0)


def mask_from_seqlens(
    cls: type[AttentionMask],
    kv_seqlen: Sequence[int],
    q_seqlen: Sequence[int] | None,
    *,
    kv_padding: int | None,
    q_padding: int | None,
    device: torch.device | str | None,
) -> AttentionMask:
    kv = _check_seqlens("kv_seqlen", kv_seqlen)
    lk = max(kv, default=0) if kv_padding is None else kv_padding
    if max(kv, default=0) > lk:
        raise ValueError(f"kv_padding ({kv_padding}) is smaller than the longest kv_seqlen ({max(kv)})")
    key_lengths = torch.tensor(kv, dtype=torch.int64, device=device)
    if q_seqlen is None:
        return cls.from_key_lengths(key_lengths, lk)
    q = _check_seqlens("q_seqlen", q_seqlen)
    if len(q) != len(kv):
        raise ValueError(f"q_seqlen has {len(q)} entries but kv_seqlen has {len(kv)}; they must match")
    lq = max(q, default=0) if q_padding is None else q_padding
    if max(q, default=0) > lq:
        raise ValueError(f"q_padding ({q_padding}) is smaller than the longest q_seqlen ({max(q)})")
    q_lengths = torch.tensor(q, dtype=torch.int64, device=device)
    return cls.from_lengths(key_lengths, lk, q_lengths, lq)


def _seqinfo_lengths(name: str, info: Any) -> list[int]:
    """Per-sample lengths from an xformers ``_SeqLenInfo`` / ``_PaddedSeqLenInfo``."""
    seqlen_py = getattr(info, "seqlen_py", None)
    if seqlen_py is not None:  # padded-keys layout
        return [int(s) for s in seqlen_py]
    starts = getattr(info, "seqstart_py", None)
    if starts is None:
        raise TypeError(
            f"bias.{name} has neither seqstart_py nor seqlen_py; not an xformers block-diagonal bias"
        )
    starts = [int(s) for s in starts]
    return [b - a for a, b in itertools.pairwise(starts)]


def _check_xformers_bias(bias: Any) -> None:
    name = type(bias).__name__
    if "Causal" in name or "Local" in name or "Window" in name:
        raise ValueError(
            f"bias is an xformers {name}; maskmm attention masks are non-causal padding masks "
            "(BlockDiagonalMask / BlockDiagonalPaddedKeysMask)"
        )
    if not hasattr(bias, "q_seqinfo") or not hasattr(bias, "k_seqinfo"):
        raise TypeError(
            f"bias must be an xformers block-diagonal bias (with q_seqinfo/k_seqinfo), got {name}"
        )


def varlen_from_xformers_bias(bias: Any, *, device: torch.device | str | None = None) -> VarlenSpec:
    """Packed ``cu_seqlens`` arguments from an xformers ``BlockDiagonalMask``.

    ``BlockDiagonalPaddedKeysMask`` describes keys in a padded layout and has no packed
    equivalent here; use :meth:`AttentionMask.from_xformers_bias` for it.
    """
    _check_xformers_bias(bias)
    if getattr(bias.k_seqinfo, "seqlen_py", None) is not None:
        raise ValueError(
            "bias has padded keys (BlockDiagonalPaddedKeysMask); use AttentionMask.from_xformers_bias"
        )
    cu_q, max_q = cu_seqlens_from_seqlens(_seqinfo_lengths("q_seqinfo", bias.q_seqinfo), device=device)
    cu_k, max_k = cu_seqlens_from_seqlens(_seqinfo_lengths("k_seqinfo", bias.k_seqinfo), device=device)
    return VarlenSpec(cu_q, cu_k, max_q, max_k)


def mask_from_xformers_bias(
    cls: type[AttentionMask], bias: Any, *, device: torch.device | str | None
) -> AttentionMask:
    _check_xformers_bias(bias)
    q = _seqinfo_lengths("q_seqinfo", bias.q_seqinfo)
    kv = _seqinfo_lengths("k_seqinfo", bias.k_seqinfo)
    padding = getattr(bias.k_seqinfo, "padding", None)
    return mask_from_seqlens(
        cls, kv, q, kv_padding=None if padding is None else int(padding), q_padding=None, device=device
    )


def _evaluate_mask_mod(
    mask_mod: Callable[..., Tensor], batch: int, heads: int, q_len: int, kv_len: int, device: Any
) -> Tensor:
    """Dense ``bool [B, H, Lq, Lk]`` of a ``mask_mod``, evaluated by broadcasting index tensors."""
    b = torch.arange(batch, device=device)[:, None, None, None]
    h = torch.arange(heads, device=device)[None, :, None, None]
    qi = torch.arange(q_len, device=device)[None, None, :, None]
    ki = torch.arange(kv_len, device=device)[None, None, None, :]
    try:
        allowed = mask_mod(b, h, qi, ki)
    except Exception:  # mask_mods written for scalar indices only: fall back to vmap
        from torch.nn.attention.flex_attention import create_mask

        allowed = create_mask(mask_mod, batch, heads, q_len, kv_len, device=device)
    return torch.as_tensor(allowed, device=device).to(torch.bool).expand(batch, heads, q_len, kv_len)


def mask_from_mask_mod(
    cls: type[AttentionMask],
    mask_mod: Callable[..., Tensor],
    batch: int,
    q_len: int,
    kv_len: int,
    *,
    heads: int,
    device: Any,
    check: bool,
) -> AttentionMask:
    for name, val in (("batch", batch), ("q_len", q_len), ("kv_len", kv_len), ("heads", heads)):
        if isinstance(val, bool) or not isinstance(val, int) or val < (1 if name == "heads" else 0):
            raise ValueError(f"{name} must be a non-negative int (heads >= 1), got {val!r}")
    if not callable(mask_mod):
        raise TypeError(f"mask_mod must be callable, got {type(mask_mod).__name__}")
    allowed = _evaluate_mask_mod(mask_mod, batch, heads, q_len, kv_len, device)
    first = allowed[:, 0]  # [B, Lq, Lk]
    key_valid = first.any(dim=1)
    query_valid = first.any(dim=2)
    if check:
        separable = query_valid[:, None, :, None] & key_valid[:, None, None, :]
        if not torch.equal(allowed, separable.expand_as(allowed)):  # one host sync (construction time)
            raise ValueError(
                "mask_mod is not a padding mask: maskmm needs allowed[b, h, q, kv] == "
                "query_valid[b, q] & key_valid[b, kv] for every head (no causal/windowed patterns)"
            )
    # A query row that attends nothing is the same as an invalid query; keep query_valid only if
    # some query is invalid would need a sync, so it is always kept.
    return cls(key_valid, query_valid)


def mask_from_block_mask(cls: type[AttentionMask], block_mask: Any, *, check: bool) -> AttentionMask:
    if not hasattr(block_mask, "kv_num_blocks") or not hasattr(block_mask, "seq_lengths"):
        raise TypeError(f"block_mask must be a FlexAttention BlockMask, got {type(block_mask).__name__}")
    q_len, kv_len = (int(s) for s in block_mask.seq_lengths)
    batch = int(block_mask.kv_num_blocks.shape[0])
    heads = int(block_mask.kv_num_blocks.shape[1])
    device = block_mask.kv_num_blocks.device
    mask_mod = getattr(block_mask, "mask_mod", None)
    if mask_mod is None:
        return cls(torch.ones(batch, kv_len, dtype=torch.bool, device=device))
    out = mask_from_mask_mod(cls, mask_mod, batch, q_len, kv_len, heads=heads, device=device, check=check)
    if heads == 1 and check:  # verified padding mask: reuse the user's block mask for this shape
        out._cache[("flex_block_mask", q_len, None)] = block_mask
    return out
