"""Launchers of the attention kernels: layout, bounds, grid and kernel configuration.

Inputs arrive validated (see ``_validate``), except the *values* of a packed call's
``cu_seqlens``, which may be unchecked (``check_values=False``): the kernels clamp every
sequence into the rows of the packed tensors (``_rows``), so bad offsets can give wrong
numbers but never an out-of-bounds read or write. ``q``/``k``/``v`` may have any strides with
a unit last-dim stride; a tensor whose last dim is strided is copied with
``.contiguous()`` first. Outputs and gradients are allocated with ``torch.empty_like``
(same strides as the input when it is dense), so a ``[B, L, H, D]`` buffer viewed as
``[B, H, L, D]`` gets its results back in that layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
from torch import Tensor

from ._config import padded_head_dim, pick_config
from ._triton_bwd import attn_bwd_dkdv_kernel, attn_bwd_dq_kernel, attn_bwd_preprocess_kernel
from ._triton_dropout import dropout_mask_kernel
from ._triton_fwd import attn_fwd_kernel

__all__ = [
    "AttnProblem",
    "backward",
    "dropout_keep_mask",
    "forward",
    "unit_last_stride",
]

_LOG2E = 1.4426950408889634


@dataclass(frozen=True)
class AttnProblem:
    """Everything but q/k/v that a launch needs (built once per call, reused by backward).

    ``lq``/``lk`` are the padded lengths (padded layout) or ``max_seqlen_q/k`` (packed layout);
    they size the saved statistics and key the dropout offsets.
    """

    varlen: bool
    batch: int
    heads: int
    lq: int
    lk: int
    head_dim: int
    q_bound: Tensor  # int32 [B]: rows at or beyond are invalid queries
    k_bound: Tensor  # int32 [B]: keys at or beyond are invalid
    cu_q: Tensor | None  # int32 [B + 1] (packed layout)
    cu_k: Tensor | None
    q_valid: Tensor | None  # uint8 [B, Lq] (padded layout)
    k_valid: Tensor | None  # uint8 [B, Lk]
    sm_scale: float
    dropout_p: float
    seed: int
    block_m: int | None = None
    block_n: int | None = None


def unit_last_stride(t: Tensor) -> Tensor:
    """``t`` itself when its last dim has stride 1 (or size 1), else a contiguous copy."""
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def _strides(t: Tensor, varlen: bool) -> tuple[int, int, int]:
    """(batch, head, row) strides; the packed layout has no batch stride."""
    if varlen:
        return 0, t.stride(1), t.stride(0)
    return t.stride(0), t.stride(1), t.stride(2)


def _upcast(q: Tensor) -> bool:
    # Triton's CPU interpreter computes tl.dot on bfloat16 operands wrongly; multiply in fp32 there.
    return q.device.type == "cpu" and q.dtype == torch.bfloat16


def _rows(q: Tensor, k: Tensor, p: AttnProblem) -> tuple[int, int]:
    """Rows of the packed ``q`` and ``k`` (``[T, H, D]``); the kernels clamp every sequence into them,
    so offsets in ``cu_q``/``cu_k`` can never address memory outside the tensors. 0 for the padded
    layout, which does not read them."""
    return (q.shape[0], k.shape[0]) if p.varlen else (0, 0)


def _dummy(p: AttnProblem) -> Tensor:
    return p.q_bound


def forward(q: Tensor, k: Tensor, v: Tensor, p: AttnProblem) -> tuple[Tensor, Tensor]:
    """Returns ``(out, lse)``: ``out`` like ``q``; ``lse`` fp32 ``[B * H, lq]`` (base 2, scaled)."""
    # Packed layout: tokens outside every sequence (or beyond max_seqlen_q) read as zeros.
    out = torch.zeros_like(q) if p.varlen else torch.empty_like(q)
    lse = torch.empty((p.batch * p.heads, p.lq), dtype=torch.float32, device=q.device)
    cfg = pick_config("fwd", p.head_dim, q.dtype, q.device, p.lq, p.lk, p.block_m, p.block_n)
    n_tiles = triton.cdiv(p.lq, cfg.block_m) * p.batch * p.heads
    if n_tiles == 0:
        return out, lse
    dummy = _dummy(p)
    attn_fwd_kernel[(n_tiles,)](
        q,
        k,
        v,
        out,
        lse,
        *_strides(q, p.varlen),
        *_strides(k, p.varlen),
        *_strides(v, p.varlen),
        *_strides(out, p.varlen),
        p.cu_q if p.cu_q is not None else dummy,
        p.cu_k if p.cu_k is not None else dummy,
        p.q_bound,
        p.k_bound,
        p.q_valid if p.q_valid is not None else dummy,
        p.q_valid.stride(0) if p.q_valid is not None else 0,
        p.k_valid if p.k_valid is not None else dummy,
        p.k_valid.stride(0) if p.k_valid is not None else 0,
        p.heads,
        p.lq,
        p.lk,
        *_rows(q, k, p),
        p.sm_scale * _LOG2E,
        p.dropout_p,
        p.seed << 32,
        HEAD_DIM=p.head_dim,
        BLOCK_D=padded_head_dim(p.head_dim),
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        IS_VARLEN=p.varlen,
        HAS_QMASK=p.q_valid is not None,
        HAS_KMASK=p.k_valid is not None,
        DROPOUT=p.dropout_p > 0.0,
        IEEE=q.dtype == torch.float32,
        UPCAST=_upcast(q),
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    return out, lse


def backward(
    do: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, p: AttnProblem
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns ``(dq, dk, dv)`` shaped and strided like ``q``, ``k``, ``v``."""
    do = unit_last_stride(do)
    alloc = torch.zeros_like if p.varlen else torch.empty_like
    dq, dk, dv = alloc(q), alloc(k), alloc(v)
    bh = p.batch * p.heads
    block_d = padded_head_dim(p.head_dim)
    dummy = _dummy(p)
    cu_q = p.cu_q if p.cu_q is not None else dummy
    cu_k = p.cu_k if p.cu_k is not None else dummy
    k_valid = p.k_valid if p.k_valid is not None else dummy
    k_valid_stride = p.k_valid.stride(0) if p.k_valid is not None else 0
    common = dict(
        HEAD_DIM=p.head_dim,
        BLOCK_D=block_d,
        IS_VARLEN=p.varlen,
        HAS_KMASK=p.k_valid is not None,
        DROPOUT=p.dropout_p > 0.0,
        IEEE=q.dtype == torch.float32,
        UPCAST=_upcast(q),
    )
    scalars = (
        p.heads,
        p.lq,
        p.lk,
        *_rows(q, k, p),
        p.sm_scale,
        p.sm_scale * _LOG2E,
        p.dropout_p,
        p.seed << 32,
    )

    delta = torch.empty((bh, p.lq), dtype=torch.float32, device=q.device)
    pre_block = 64 if q.device.type == "cuda" else 16
    n_pre = triton.cdiv(p.lq, pre_block) * bh
    if n_pre > 0:
        attn_bwd_preprocess_kernel[(n_pre,)](
            out,
            do,
            delta,
            *_strides(out, p.varlen),
            *_strides(do, p.varlen),
            cu_q,
            p.heads,
            p.lq,
            _rows(q, k, p)[0],
            HEAD_DIM=p.head_dim,
            BLOCK_D=block_d,
            BLOCK_M=pre_block,
            IS_VARLEN=p.varlen,
        )

    operands = (q, k, v, do)
    # dK/dV programs tile the keys and stream the queries; dQ programs the other way round.
    for kernel, pass_name, grads in (
        (attn_bwd_dkdv_kernel, "bwd_kv", (dk, dv)),
        (attn_bwd_dq_kernel, "bwd_q", (dq,)),
    ):
        cfg = pick_config(pass_name, p.head_dim, q.dtype, q.device, p.lq, p.lk, p.block_m, p.block_n)
        length, block = (p.lk, cfg.block_n) if pass_name == "bwd_kv" else (p.lq, cfg.block_m)
        n_tiles = triton.cdiv(length, block) * bh
        if n_tiles == 0:
            continue
        kernel[(n_tiles,)](
            *operands,
            *grads,
            lse,
            delta,
            *(s for t in (*operands, *grads) for s in _strides(t, p.varlen)),
            cu_q,
            cu_k,
            p.q_bound,
            p.k_bound,
            k_valid,
            k_valid_stride,
            *scalars,
            BLOCK_M=cfg.block_m,
            BLOCK_N=cfg.block_n,
            num_warps=cfg.num_warps,
            num_stages=cfg.num_stages,
            **common,
        )
    return dq, dk, dv


def dropout_keep_mask(
    seed: int, batch: int, heads: int, lq: int, lk: int, dropout_p: float, device: torch.device
) -> Tensor:
    """bool ``[B, H, Lq, Lk]``: the keep-mask the attention kernels draw for ``seed``."""
    out = torch.empty((batch, heads, lq, lk), dtype=torch.uint8, device=device)
    block_m = 32 if device.type == "cuda" else 16
    block_n = 128 if device.type == "cuda" else 64
    n_tiles = triton.cdiv(lq, block_m) * batch * heads
    if n_tiles > 0 and lk > 0:
        dropout_mask_kernel[(n_tiles,)](
            out, lq, lk, float(dropout_p), seed << 32, BLOCK_M=block_m, BLOCK_N=block_n
        )
    return out.view(torch.bool)
