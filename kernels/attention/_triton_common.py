"""``@triton.jit`` helpers shared by the attention kernels.

Sequence bookkeeping (which rows and keys a program visits), tile loads and stores,
validity masks, the backward passes' probability recomputation and the dropout RNG live
here so that the forward, both backward passes and :func:`attention_dropout_mask` use
literally the same code. Triton inlines ``@triton.jit`` calls: they cost nothing at run time.
"""

from __future__ import annotations

import triton
import triton.language as tl

# log2 of the softmax denominator stored for rows with no valid key (or an invalid
# query): exp2(score - EMPTY_LSE) underflows to exactly 0, so the backward passes
# give such rows zero gradient without a branch.
EMPTY_LSE = tl.constexpr(1.0e30)
# Initial running max: finite, so exp2(m_old - m_new) is never exp2(-inf + inf).
M_INIT = tl.constexpr(-1.0e30)


@triton.jit
def _mm(a, b, IEEE: tl.constexpr, UPCAST: tl.constexpr):
    """``a @ b`` accumulated in fp32; fp32 inputs use exact fp32 products (no TF32).

    ``UPCAST`` (set only under the CPU interpreter for bfloat16, whose ``tl.dot`` mishandles
    bfloat16 operands) multiplies the already-rounded bfloat16 values in fp32.
    """
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    elif IEEE:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _dropout_keep(seed_key, bh, rows, cols, LK, dropout_p):
    """Keep-mask ``u >= dropout_p``, ``u ~ U[0, 1)``, for the element grid ``rows x cols`` of head ``bh``.

    Philox is keyed by ``(seed, b * H + h)`` (``seed`` in the high 32 bits) and counted by
    the int32 offset ``i * LK + j`` (``i``/``j`` = query/key position inside its sequence,
    ``LK`` = padded key length or ``max_seqlen_k``), so a draw depends only on
    ``(seed, b, h, i, j)``: never on block sizes, pass or layout.
    ``rows``/``cols`` may be laid out as ``[M, 1] x [1, N]`` or transposed.
    """
    # seed_key = seed << 32, combined on the host (an int argument equal to 1 could be
    # specialised into a constexpr by the JIT, which has no ``.to``).
    key = seed_key + bh.to(tl.int64)
    offsets = rows * LK + cols
    return tl.rand(key, offsets) >= dropout_p


@triton.jit
def _dropout_scale(x, keep, inv_keep):
    """``x / (1 - p)`` where ``keep``, else 0 (``inv_keep = 1 / (1 - p)``)."""
    return tl.where(keep, x * inv_keep, 0.0)


@triton.jit
def _program(
    LENGTH,
    BLOCK: tl.constexpr,
    H,
    CU_Q,
    CU_K,
    Q_BOUND,
    K_BOUND,
    LQ,
    LK,
    TQ,
    TK,
    IS_VARLEN: tl.constexpr,
):
    """What an attention program works on, from a 1-D grid that tiles ``LENGTH`` by ``BLOCK``.

    Returns ``(tile index, b * H + h, b, h, first q row, first k row, q rows present,
    k rows present, q bound, k bound)``, ``b`` to the first rows as int64. ``bound`` = number of
    leading rows that may hold a valid query/key: everything at or beyond it is skipped.
    ``TQ``/``TK``: rows of the packed q / k tensors (read only with ``IS_VARLEN``).
    """
    pid, bh = _tile_ids(LENGTH, BLOCK)
    b = bh // H
    h = bh % H
    if IS_VARLEN:
        q_start, q_rows = _sequence_rows(CU_Q, b, LQ, TQ)
        k_start, k_rows = _sequence_rows(CU_K, b, LK, TK)
    else:
        q_start = b * 0
        k_start = b * 0
        q_rows = LQ + b * 0
        k_rows = LK + b * 0
    q_bound = tl.minimum(tl.load(Q_BOUND + b), q_rows)
    k_bound = tl.minimum(tl.load(K_BOUND + b), k_rows)
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    return pid, bh, b64, h64, q_start.to(tl.int64), k_start.to(tl.int64), q_rows, k_rows, q_bound, k_bound


@triton.jit
def _sequence_rows(CU, b, MAX_LEN, TOTAL):
    """``(first row, rows present)`` of packed sequence ``b``: rows ``[CU[b], CU[b + 1])``, at most
    ``MAX_LEN`` of them.

    Both ends are clamped into ``[0, TOTAL]`` (``TOTAL`` = rows of the packed tensor) and the end to
    at least the start, so every row a program touches exists whatever ``CU`` holds: offsets that
    break the ``cu_seqlens`` contract give wrong numbers, never an out-of-bounds access.
    """
    start = tl.minimum(tl.maximum(tl.load(CU + b), 0), TOTAL)
    end = tl.minimum(tl.maximum(tl.load(CU + b + 1), start), TOTAL)
    return start, tl.minimum(end - start, MAX_LEN)


@triton.jit
def _head_ptr(X, b64, h64, row64, stride_b, stride_h, stride_row):
    """Pointer to row ``row64`` of head ``(b, h)`` of ``X`` (int64 offsets)."""
    return X + b64 * stride_b + h64 * stride_h + row64 * stride_row


@triton.jit
def _load_rows(base, rows, stride_row, offs_d, row_ok, d_ok):
    """Tile ``[rows, BLOCK_D]`` read from ``base + row * stride_row + d``; zeros outside ``row_ok x d_ok``."""
    return tl.load(
        base + rows[:, None] * stride_row + offs_d[None, :],
        mask=row_ok[:, None] & d_ok[None, :],
        other=0.0,
    )


@triton.jit
def _store_rows(base, rows, stride_row, offs_d, value, row_ok, d_ok):
    """Write ``value [rows, BLOCK_D]`` (cast to the element type of ``base``) where ``row_ok x d_ok``."""
    tl.store(
        base + rows[:, None] * stride_row + offs_d[None, :],
        value.to(base.dtype.element_ty),
        mask=row_ok[:, None] & d_ok[None, :],
    )


@triton.jit
def _valid(VALID, offset, idx, in_bound, HAS_MASK: tl.constexpr):
    """``in_bound``, and, with ``HAS_MASK``, the uint8 flags ``VALID[offset + idx] != 0``."""
    ok = in_bound
    if HAS_MASK:
        ok = ok & (tl.load(VALID + offset + idx, mask=in_bound, other=0) != 0)
    return ok


@triton.jit
def _recompute_p(a, b_t, qk_scale, lse, ok, IEEE: tl.constexpr, UPCAST: tl.constexpr):
    """Softmax probabilities from the saved row LSE: ``exp2(a @ b_t * qk_scale - lse)``, 0 outside ``ok``.

    ``lse`` and ``ok`` come broadcast to the score tile (either orientation).
    """
    s = _mm(a, b_t, IEEE, UPCAST) * qk_scale
    return tl.where(ok, tl.exp2(s - lse), 0.0)


@triton.jit
def _tile_ids(LENGTH, BLOCK: tl.constexpr):
    """(tile index along the sequence, b * H + h) from a 1-D grid of ``cdiv(LENGTH, BLOCK) * B * H``.

    Tiles of one head are adjacent (their K/V stay in L2) and a 1-D grid has no 65535 limit.
    """
    pid = tl.program_id(0)
    n_tiles = tl.cdiv(LENGTH, BLOCK)
    return pid % n_tiles, pid // n_tiles
