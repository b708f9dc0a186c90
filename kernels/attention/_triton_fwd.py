"""Forward ``@triton.jit`` kernel of masked flash attention.

One program computes ``BLOCK_M`` query rows of one (batch, head): it streams key/value
tiles up to the sample's key bound with an online softmax (base 2, ``log2(e)`` folded
into ``qk_scale``) and writes the normalised output and the row log-sum-exp (base 2).
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._triton_common import (
    EMPTY_LSE,
    M_INIT,
    _dropout_keep,
    _dropout_scale,
    _head_ptr,
    _load_rows,
    _mm,
    _program,
    _store_rows,
    _valid,
)


@triton.jit
def attn_fwd_kernel(
    Q,
    K,
    V,
    O,
    LSE,
    stride_qb,
    stride_qh,
    stride_qm,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_ob,
    stride_oh,
    stride_om,
    CU_Q,
    CU_K,
    Q_BOUND,
    K_BOUND,
    QVALID,
    stride_qvb,
    KVALID,
    stride_kvb,
    H,
    LQ,
    LK,
    TQ,
    TK,
    qk_scale,
    dropout_p,
    seed_key,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    HAS_QMASK: tl.constexpr,
    HAS_KMASK: tl.constexpr,
    DROPOUT: tl.constexpr,
    IEEE: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid_m, bh, b64, h64, q64, k64, q_rows, _k_rows, q_bound, k_bound = _program(
        LQ, BLOCK_M, H, CU_Q, CU_K, Q_BOUND, K_BOUND, LQ, LK, TQ, TK, IS_VARLEN
    )
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    row_in = offs_m < q_rows

    q_base = _head_ptr(Q, b64, h64, q64, stride_qb, stride_qh, stride_qm)
    k_base = _head_ptr(K, b64, h64, k64, stride_kb, stride_kh, stride_kn)
    v_base = _head_ptr(V, b64, h64, k64, stride_vb, stride_vh, stride_vn)
    o_base = _head_ptr(O, b64, h64, q64, stride_ob, stride_oh, stride_om)

    row_ok = _valid(QVALID, b64 * stride_qvb, offs_m, offs_m < q_bound, HAS_QMASK)
    # Skip every key tile when no row of this tile is a valid query.
    any_row = tl.max(row_ok.to(tl.int32), axis=0) > 0
    hi = tl.where(any_row, k_bound, 0)

    q = _load_rows(q_base, offs_m, stride_qm, offs_d, row_ok, d_ok)
    m_i = tl.full([BLOCK_M], M_INIT, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    inv_keep = 1.0 / (1.0 - dropout_p)

    for start_n in range(0, hi, BLOCK_N):
        cols = start_n + offs_n
        col_in = cols < hi
        col_ok = _valid(KVALID, b64 * stride_kvb, cols, col_in, HAS_KMASK)
        # K^T tile [BLOCK_D, BLOCK_N]
        k_t = tl.load(
            k_base + cols[None, :] * stride_kn + offs_d[:, None],
            mask=col_in[None, :] & d_ok[:, None],
            other=0.0,
        )
        s = _mm(q, k_t, IEEE, UPCAST) * qk_scale
        s = tl.where(col_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None]
        if DROPOUT:
            keep = _dropout_keep(seed_key, bh, offs_m[:, None], cols[None, :], LK, dropout_p)
            p = _dropout_scale(p, keep, inv_keep)
        v = _load_rows(v_base, cols, stride_vn, offs_d, col_in, d_ok)
        acc += _mm(p.to(v.dtype), v, IEEE, UPCAST)
        m_i = m_new

    ok = row_ok & (l_i > 0.0)
    l_safe = tl.where(ok, l_i, 1.0)
    out = tl.where(ok[:, None], acc / l_safe[:, None], 0.0)
    lse = tl.where(ok, m_i + tl.log2(l_safe), EMPTY_LSE)
    _store_rows(o_base, offs_m, stride_om, offs_d, out, row_in, d_ok)
    tl.store(LSE + bh.to(tl.int64) * LQ + offs_m, lse, mask=row_in)
