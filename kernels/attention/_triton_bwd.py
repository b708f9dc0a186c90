"""Backward ``@triton.jit`` kernels of masked flash attention.

Three kernels, no atomics (deterministic):

1. ``attn_bwd_preprocess_kernel``: ``delta_i = sum_d dO_id * O_id`` (fp32).
2. ``attn_bwd_dkdv_kernel``: one program per key tile; streams the query tiles up to the
   sample's query bound, recomputes ``P = exp2(S * log2e - lse)`` and accumulates
   ``dV += (P * Z)^T dO`` and ``dK += (P * (Z * dO V^T - delta))^T Q * scale``.
3. ``attn_bwd_dq_kernel``: one program per query tile; streams the key tiles up to the
   key bound and accumulates ``dQ += (P * (Z * dO V^T - delta)) K * scale``.

``Z`` is the dropout keep-mask scaled by ``1 / (1 - p)``, regenerated from the seed.
Rows saved with ``lse = EMPTY_LSE`` (no valid key, invalid query) get ``P = 0``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._triton_common import (
    EMPTY_LSE,
    _dropout_keep,
    _dropout_scale,
    _head_ptr,
    _load_rows,
    _mm,
    _program,
    _recompute_p,
    _sequence_rows,
    _store_rows,
    _tile_ids,
    _valid,
)


@triton.jit
def attn_bwd_preprocess_kernel(
    O,
    DO,
    DELTA,
    stride_ob,
    stride_oh,
    stride_om,
    stride_dob,
    stride_doh,
    stride_dom,
    CU_Q,
    H,
    LQ,
    TQ,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    pid_m, bh = _tile_ids(LQ, BLOCK_M)
    b = bh // H
    h = bh % H
    if IS_VARLEN:
        q_start, q_rows = _sequence_rows(CU_Q, b, LQ, TQ)
    else:
        q_start = b * 0
        q_rows = LQ + b * 0
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    row_in = offs_m < q_rows
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    q64 = q_start.to(tl.int64)
    o_base = _head_ptr(O, b64, h64, q64, stride_ob, stride_oh, stride_om)
    do_base = _head_ptr(DO, b64, h64, q64, stride_dob, stride_doh, stride_dom)
    o = _load_rows(o_base, offs_m, stride_om, offs_d, row_in, d_ok)
    do = _load_rows(do_base, offs_m, stride_dom, offs_d, row_in, d_ok)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(DELTA + bh.to(tl.int64) * LQ + offs_m, delta, mask=row_in)


@triton.jit
def attn_bwd_dkdv_kernel(
    Q,
    K,
    V,
    DO,
    DK,
    DV,
    LSE,
    DELTA,
    stride_qb,
    stride_qh,
    stride_qm,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_dob,
    stride_doh,
    stride_dom,
    stride_dkb,
    stride_dkh,
    stride_dkn,
    stride_dvb,
    stride_dvh,
    stride_dvn,
    CU_Q,
    CU_K,
    Q_BOUND,
    K_BOUND,
    KVALID,
    stride_kvb,
    H,
    LQ,
    LK,
    TQ,
    TK,
    sm_scale,
    qk_scale,
    dropout_p,
    seed_key,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    HAS_KMASK: tl.constexpr,
    DROPOUT: tl.constexpr,
    IEEE: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid_n, bh, b64, h64, q64, k64, _q_rows, k_rows, q_bound, k_bound = _program(
        LK, BLOCK_N, H, CU_Q, CU_K, Q_BOUND, K_BOUND, LQ, LK, TQ, TK, IS_VARLEN
    )
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM

    col_in = offs_n < k_bound
    col_ok = _valid(KVALID, b64 * stride_kvb, offs_n, col_in, HAS_KMASK)
    # Skip every query tile when no key of this tile is valid.
    any_col = tl.max(col_ok.to(tl.int32), axis=0) > 0
    hi = tl.where(any_col, q_bound, 0)

    k_base = _head_ptr(K, b64, h64, k64, stride_kb, stride_kh, stride_kn)
    v_base = _head_ptr(V, b64, h64, k64, stride_vb, stride_vh, stride_vn)
    k = _load_rows(k_base, offs_n, stride_kn, offs_d, col_in, d_ok)
    v = _load_rows(v_base, offs_n, stride_vn, offs_d, col_in, d_ok)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    inv_keep = 1.0 / (1.0 - dropout_p)
    q_base = _head_ptr(Q, b64, h64, q64, stride_qb, stride_qh, stride_qm)
    do_base = _head_ptr(DO, b64, h64, q64, stride_dob, stride_doh, stride_dom)
    stat_base = bh.to(tl.int64) * LQ

    for start_m in range(0, hi, BLOCK_M):
        rows = start_m + offs_m0
        row_in = rows < hi
        q = _load_rows(q_base, rows, stride_qm, offs_d, row_in, d_ok)
        do = _load_rows(do_base, rows, stride_dom, offs_d, row_in, d_ok)
        lse = tl.load(LSE + stat_base + rows, mask=row_in, other=EMPTY_LSE)
        delta = tl.load(DELTA + stat_base + rows, mask=row_in, other=0.0)
        # Transposed tiles [BLOCK_N, BLOCK_M]: P^T and (dO V^T)^T.
        p_t = _recompute_p(k, tl.trans(q), qk_scale, lse[None, :], col_ok[:, None], IEEE, UPCAST)
        dp_t = _mm(v, tl.trans(do), IEEE, UPCAST)
        if DROPOUT:
            keep_t = _dropout_keep(seed_key, bh, rows[None, :], offs_n[:, None], LK, dropout_p)
            pz_t = _dropout_scale(p_t, keep_t, inv_keep)
            dp_t = _dropout_scale(dp_t, keep_t, inv_keep)
        else:
            pz_t = p_t
        dv += _mm(pz_t.to(do.dtype), do, IEEE, UPCAST)
        ds_t = p_t * (dp_t - delta[None, :])
        dk += _mm(ds_t.to(q.dtype), q, IEEE, UPCAST)

    dk = dk * sm_scale
    row_out = offs_n < k_rows
    dk_base = _head_ptr(DK, b64, h64, k64, stride_dkb, stride_dkh, stride_dkn)
    dv_base = _head_ptr(DV, b64, h64, k64, stride_dvb, stride_dvh, stride_dvn)
    _store_rows(dk_base, offs_n, stride_dkn, offs_d, dk, row_out, d_ok)
    _store_rows(dv_base, offs_n, stride_dvn, offs_d, dv, row_out, d_ok)


@triton.jit
def attn_bwd_dq_kernel(
    Q,
    K,
    V,
    DO,
    DQ,
    LSE,
    DELTA,
    stride_qb,
    stride_qh,
    stride_qm,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_dob,
    stride_doh,
    stride_dom,
    stride_dqb,
    stride_dqh,
    stride_dqm,
    CU_Q,
    CU_K,
    Q_BOUND,
    K_BOUND,
    KVALID,
    stride_kvb,
    H,
    LQ,
    LK,
    TQ,
    TK,
    sm_scale,
    qk_scale,
    dropout_p,
    seed_key,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    HAS_KMASK: tl.constexpr,
    DROPOUT: tl.constexpr,
    IEEE: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid_m, bh, b64, h64, q64, k64, q_rows, _k_rows, q_bound, k_bound = _program(
        LQ, BLOCK_M, H, CU_Q, CU_K, Q_BOUND, K_BOUND, LQ, LK, TQ, TK, IS_VARLEN
    )
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    stat_base = bh.to(tl.int64) * LQ

    row_in = offs_m < q_bound
    lse = tl.load(LSE + stat_base + offs_m, mask=row_in, other=EMPTY_LSE)
    # Rows saved as empty (no valid key, invalid query) have zero gradient: skip the tile
    # when all of its rows are.
    any_row = tl.min(lse, axis=0) < 0.5 * EMPTY_LSE
    hi = tl.where(any_row, k_bound, 0)

    q_base = _head_ptr(Q, b64, h64, q64, stride_qb, stride_qh, stride_qm)
    do_base = _head_ptr(DO, b64, h64, q64, stride_dob, stride_doh, stride_dom)
    q = _load_rows(q_base, offs_m, stride_qm, offs_d, row_in, d_ok)
    do = _load_rows(do_base, offs_m, stride_dom, offs_d, row_in, d_ok)
    delta = tl.load(DELTA + stat_base + offs_m, mask=row_in, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    inv_keep = 1.0 / (1.0 - dropout_p)
    k_base = _head_ptr(K, b64, h64, k64, stride_kb, stride_kh, stride_kn)
    v_base = _head_ptr(V, b64, h64, k64, stride_vb, stride_vh, stride_vn)

    for start_n in range(0, hi, BLOCK_N):
        cols = start_n + offs_n0
        col_in = cols < hi
        col_ok = _valid(KVALID, b64 * stride_kvb, cols, col_in, HAS_KMASK)
        k = _load_rows(k_base, cols, stride_kn, offs_d, col_in, d_ok)
        v = _load_rows(v_base, cols, stride_vn, offs_d, col_in, d_ok)
        p = _recompute_p(q, tl.trans(k), qk_scale, lse[:, None], col_ok[None, :], IEEE, UPCAST)
        dp = _mm(do, tl.trans(v), IEEE, UPCAST)
        if DROPOUT:
            keep = _dropout_keep(seed_key, bh, offs_m[:, None], cols[None, :], LK, dropout_p)
            dp = _dropout_scale(dp, keep, inv_keep)
        ds = p * (dp - delta[:, None])
        dq += _mm(ds.to(k.dtype), k, IEEE, UPCAST)

    dq = dq * sm_scale
    dq_base = _head_ptr(DQ, b64, h64, q64, stride_dqb, stride_dqh, stride_dqm)
    _store_rows(dq_base, offs_m, stride_dqm, offs_d, dq, offs_m < q_rows, d_ok)
