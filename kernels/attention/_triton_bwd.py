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

from ._triton_common import EMPTY_LSE, _dropout_keep, _mm, _seq_info, _tile_ids


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
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    pid_m, bh = _tile_ids(LQ, BLOCK_M)
    b = bh // H
    h = bh % H
    if IS_VARLEN:
        q_start = tl.load(CU_Q + b)
        q_rows = tl.minimum(tl.load(CU_Q + b + 1) - q_start, LQ)
    else:
        q_start = b * 0
        q_rows = LQ + b * 0
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_in = offs_m < q_rows
    mask = row_in[:, None] & (offs_d < HEAD_DIM)[None, :]
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    q64 = q_start.to(tl.int64)
    o = tl.load(
        O + b64 * stride_ob + h64 * stride_oh + (q64 + offs_m[:, None]) * stride_om + offs_d[None, :],
        mask=mask,
        other=0.0,
    )
    do = tl.load(
        DO + b64 * stride_dob + h64 * stride_doh + (q64 + offs_m[:, None]) * stride_dom + offs_d[None, :],
        mask=mask,
        other=0.0,
    )
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
    pid_n, bh = _tile_ids(LK, BLOCK_N)
    b = bh // H
    h = bh % H
    q_start, k_start, _q_rows, k_rows, q_bound, k_bound = _seq_info(
        b, CU_Q, CU_K, Q_BOUND, K_BOUND, LQ, LK, IS_VARLEN
    )
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    q64 = q_start.to(tl.int64)
    k64 = k_start.to(tl.int64)

    col_in = offs_n < k_bound
    col_ok = col_in
    if HAS_KMASK:
        col_ok = col_ok & (tl.load(KVALID + b64 * stride_kvb + offs_n, mask=col_in, other=0) != 0)
    # Skip every query tile when no key of this tile is valid.
    any_col = tl.max(col_ok.to(tl.int32), axis=0) > 0
    hi = tl.where(any_col, q_bound, 0)

    kv_mask = col_in[:, None] & d_ok[None, :]
    k = tl.load(
        K + b64 * stride_kb + h64 * stride_kh + (k64 + offs_n[:, None]) * stride_kn + offs_d[None, :],
        mask=kv_mask,
        other=0.0,
    )
    v = tl.load(
        V + b64 * stride_vb + h64 * stride_vh + (k64 + offs_n[:, None]) * stride_vn + offs_d[None, :],
        mask=kv_mask,
        other=0.0,
    )
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    inv_keep = 1.0 / (1.0 - dropout_p)
    q_base = Q + b64 * stride_qb + h64 * stride_qh + q64 * stride_qm
    do_base = DO + b64 * stride_dob + h64 * stride_doh + q64 * stride_dom
    stat_base = bh.to(tl.int64) * LQ

    for start_m in range(0, hi, BLOCK_M):
        rows = start_m + offs_m0
        row_in = rows < hi
        qd_mask = row_in[:, None] & d_ok[None, :]
        q = tl.load(q_base + rows[:, None] * stride_qm + offs_d[None, :], mask=qd_mask, other=0.0)
        do = tl.load(do_base + rows[:, None] * stride_dom + offs_d[None, :], mask=qd_mask, other=0.0)
        lse = tl.load(LSE + stat_base + rows, mask=row_in, other=EMPTY_LSE)
        delta = tl.load(DELTA + stat_base + rows, mask=row_in, other=0.0)
        s_t = _mm(k, tl.trans(q), IEEE, UPCAST) * qk_scale  # [BLOCK_N, BLOCK_M]
        p_t = tl.where(col_ok[:, None], tl.exp2(s_t - lse[None, :]), 0.0)
        dp_t = _mm(v, tl.trans(do), IEEE, UPCAST)  # dO V^T, transposed
        if DROPOUT:
            keep_t = _dropout_keep(seed_key, bh, rows[None, :], offs_n[:, None], LK) >= dropout_p
            pz_t = tl.where(keep_t, p_t * inv_keep, 0.0)
            dp_t = tl.where(keep_t, dp_t * inv_keep, 0.0)
        else:
            pz_t = p_t
        dv += _mm(pz_t.to(do.dtype), do, IEEE, UPCAST)
        ds_t = p_t * (dp_t - delta[None, :])
        dk += _mm(ds_t.to(q.dtype), q, IEEE, UPCAST)

    dk = dk * sm_scale
    out_mask = (offs_n < k_rows)[:, None] & d_ok[None, :]
    tl.store(
        DK + b64 * stride_dkb + h64 * stride_dkh + (k64 + offs_n[:, None]) * stride_dkn + offs_d[None, :],
        dk.to(DK.dtype.element_ty),
        mask=out_mask,
    )
    tl.store(
        DV + b64 * stride_dvb + h64 * stride_dvh + (k64 + offs_n[:, None]) * stride_dvn + offs_d[None, :],
        dv.to(DV.dtype.element_ty),
        mask=out_mask,
    )


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
    pid_m, bh = _tile_ids(LQ, BLOCK_M)
    b = bh // H
    h = bh % H
    q_start, k_start, q_rows, _k_rows, q_bound, k_bound = _seq_info(
        b, CU_Q, CU_K, Q_BOUND, K_BOUND, LQ, LK, IS_VARLEN
    )
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    q64 = q_start.to(tl.int64)
    k64 = k_start.to(tl.int64)
    stat_base = bh.to(tl.int64) * LQ

    row_in = offs_m < q_bound
    lse = tl.load(LSE + stat_base + offs_m, mask=row_in, other=EMPTY_LSE)
    # Rows saved as empty (no valid key, invalid query) have zero gradient: skip the tile
    # when all of its rows are.
    any_row = tl.min(lse, axis=0) < 0.5 * EMPTY_LSE
    hi = tl.where(any_row, k_bound, 0)

    qd_mask = row_in[:, None] & d_ok[None, :]
    q = tl.load(
        Q + b64 * stride_qb + h64 * stride_qh + (q64 + offs_m[:, None]) * stride_qm + offs_d[None, :],
        mask=qd_mask,
        other=0.0,
    )
    do = tl.load(
        DO + b64 * stride_dob + h64 * stride_doh + (q64 + offs_m[:, None]) * stride_dom + offs_d[None, :],
        mask=qd_mask,
        other=0.0,
    )
    delta = tl.load(DELTA + stat_base + offs_m, mask=row_in, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    inv_keep = 1.0 / (1.0 - dropout_p)
    k_base = K + b64 * stride_kb + h64 * stride_kh + k64 * stride_kn
    v_base = V + b64 * stride_vb + h64 * stride_vh + k64 * stride_vn

    for start_n in range(0, hi, BLOCK_N):
        cols = start_n + offs_n0
        col_in = cols < hi
        col_ok = col_in
        if HAS_KMASK:
            col_ok = col_ok & (tl.load(KVALID + b64 * stride_kvb + cols, mask=col_in, other=0) != 0)
        kv_mask = col_in[:, None] & d_ok[None, :]
        k = tl.load(k_base + cols[:, None] * stride_kn + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :], mask=kv_mask, other=0.0)
        s = _mm(q, tl.trans(k), IEEE, UPCAST) * qk_scale
        p = tl.where(col_ok[None, :], tl.exp2(s - lse[:, None]), 0.0)
        dp = _mm(do, tl.trans(v), IEEE, UPCAST)
        if DROPOUT:
            keep = _dropout_keep(seed_key, bh, offs_m[:, None], cols[None, :], LK) >= dropout_p
            dp = tl.where(keep, dp * inv_keep, 0.0)
        ds = p * (dp - delta[:, None])
        dq += _mm(ds.to(k.dtype), k, IEEE, UPCAST)

    dq = dq * sm_scale
    tl.store(
        DQ + b64 * stride_dqb + h64 * stride_dqh + (q64 + offs_m[:, None]) * stride_dqm + offs_d[None, :],
        dq.to(DQ.dtype.element_ty),
        mask=(offs_m < q_rows)[:, None] & d_ok[None, :],
    )
