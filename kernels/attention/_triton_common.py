"""``@triton.jit`` helpers shared by the attention kernels.

Sequence bookkeeping (which rows and keys a program visits) and the dropout RNG live
here so that the forward, both backward passes and :func:`attention_dropout_mask`
use literally the same code.
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
def _dropout_keep(seed_key, bh, rows, cols, LK):
    """Keep-draws ``u ~ U[0, 1)`` for the element grid ``rows x cols`` of head ``bh``.

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
    return tl.rand(key, offsets)


@triton.jit
def _seq_info(
    b,
    CU_Q,
    CU_K,
    Q_BOUND,
    K_BOUND,
    LQ,
    LK,
    IS_VARLEN: tl.constexpr,
):
    """Per-sample layout: (first q row, first k row, q rows present, k rows present, q bound, k bound).

    ``bound`` = number of leading rows that may hold a valid query/key: everything at or
    beyond it is skipped.
    """
    if IS_VARLEN:
        q_start = tl.load(CU_Q + b)
        k_start = tl.load(CU_K + b)
        q_rows = tl.minimum(tl.load(CU_Q + b + 1) - q_start, LQ)
        k_rows = tl.minimum(tl.load(CU_K + b + 1) - k_start, LK)
    else:
        q_start = b * 0
        k_start = b * 0
        q_rows = LQ + b * 0
        k_rows = LK + b * 0
    q_bound = tl.minimum(tl.load(Q_BOUND + b), q_rows)
    k_bound = tl.minimum(tl.load(K_BOUND + b), k_rows)
    return q_start, k_start, q_rows, k_rows, q_bound, k_bound


@triton.jit
def _tile_ids(LENGTH, BLOCK: tl.constexpr):
    """(tile index along the sequence, b * H + h) from a 1-D grid of ``cdiv(LENGTH, BLOCK) * B * H``.

    Tiles of one head are adjacent (their K/V stay in L2) and a 1-D grid has no 65535 limit.
    """
    pid = tl.program_id(0)
    n_tiles = tl.cdiv(LENGTH, BLOCK)
    return pid % n_tiles, pid // n_tiles
