"""``@triton.jit`` kernel that materialises the attention-dropout keep-mask.

It draws with the same helper and the same per-(b, h, i, j) offsets as the attention
kernels, so its output is exactly the mask they apply for that seed.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._triton_common import _dropout_keep, _tile_ids


@triton.jit
def dropout_mask_kernel(
    OUT,
    LQ,
    LK,
    dropout_p,
    seed_key,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_m, bh = _tile_ids(LQ, BLOCK_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    base = OUT + bh.to(tl.int64) * LQ * LK
    for start_n in range(0, LK, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        keep = _dropout_keep(seed_key, bh, rows[:, None], cols[None, :], LK, dropout_p)
        tl.store(
            base + rows[:, None].to(tl.int64) * LK + cols[None, :],
            keep.to(tl.uint8),
            mask=(rows < LQ)[:, None] & (cols < LK)[None, :],
        )
