"""Block sizes, warps and pipeline stages of the attention kernels.

Tabulated per pass, per head-dim bucket (padded head dim 16/32/64/128) and per GPU
generation (sm90 = Hopper and data-centre Blackwell, sm80 = A100, ``other`` = anything else,
including consumer parts with ~100 KB of shared memory and the CPU interpreter).
Every sm80/sm90 entry is checked ahead of time by ``benchmarks/kernel_compile_check.py``
(compiles for both targets without a GPU: no register spills, shared memory within the
limit, ``wgmma`` and ``cp.async`` pipelining on sm90).
fp32 inputs halve both block sizes (tiles take twice the shared memory).
Blocks are clamped to the (power-of-two rounded) sequence lengths so short
sequences do not compute empty tiles.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._validate import device_capability

__all__ = ["KernelConfig", "pick_config"]


class KernelConfig(NamedTuple):
    block_m: int  # query rows per tile
    block_n: int  # keys per tile
    num_warps: int
    num_stages: int


# (pass, arch) -> {padded head dim -> (block_m, block_n, num_warps, num_stages)}
_TABLE: dict[tuple[str, str], dict[int, tuple[int, int, int, int]]] = {
    ("fwd", "sm90"): {16: (128, 64, 4, 3), 32: (128, 64, 4, 3), 64: (128, 64, 4, 3), 128: (128, 64, 8, 3)},
    ("fwd", "sm80"): {16: (128, 64, 4, 3), 32: (128, 64, 4, 3), 64: (128, 64, 4, 3), 128: (128, 64, 8, 2)},
    ("fwd", "other"): {16: (64, 64, 4, 2), 32: (64, 64, 4, 2), 64: (64, 64, 4, 2), 128: (64, 32, 4, 2)},
    # dK/dV: one key tile resident, query tiles streamed.
    ("bwd_kv", "sm90"): {16: (32, 128, 4, 3), 32: (32, 128, 4, 3), 64: (32, 128, 4, 3), 128: (32, 64, 4, 3)},
    ("bwd_kv", "sm80"): {16: (32, 128, 4, 3), 32: (32, 128, 4, 3), 64: (32, 128, 4, 2), 128: (32, 64, 4, 2)},
    ("bwd_kv", "other"): {16: (32, 64, 4, 2), 32: (32, 64, 4, 2), 64: (32, 64, 4, 2), 128: (32, 32, 4, 2)},
    # dQ: one query tile resident, key tiles streamed.
    ("bwd_q", "sm90"): {16: (128, 32, 4, 3), 32: (128, 32, 4, 3), 64: (128, 32, 4, 3), 128: (64, 32, 4, 3)},
    ("bwd_q", "sm80"): {16: (128, 32, 4, 3), 32: (128, 32, 4, 3), 64: (128, 32, 4, 2), 128: (64, 32, 4, 2)},
    ("bwd_q", "other"): {16: (64, 32, 4, 2), 32: (64, 32, 4, 2), 64: (64, 32, 4, 2), 128: (32, 32, 4, 2)},
}


def _arch(device: torch.device) -> str:
    if device.type != "cuda":
        return "other"
    major, minor = device_capability(device)
    if major in (9, 10):  # Hopper, data-centre Blackwell: ~227 KB shared memory per block
        return "sm90"
    if (major, minor) == (8, 0):  # A100: 163 KB
        return "sm80"
    # sm86/sm89 and consumer Blackwell (sm120) have ~100 KB: the sm90 tiles would not fit.
    return "other"


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def padded_head_dim(d: int) -> int:
    """Head dim rounded up to a power of two, at least 16 (``tl.dot``'s minimum)."""
    return max(16, _pow2(d))


def pick_config(
    pass_name: str,
    head_dim: int,
    dtype: torch.dtype,
    device: torch.device,
    lq: int,
    lk: int,
    block_m: int | None = None,
    block_n: int | None = None,
) -> KernelConfig:
    """Config for ``pass_name`` in ``{"fwd", "bwd_kv", "bwd_q"}``; explicit blocks override the table."""
    bm, bn, warps, stages = _TABLE[(pass_name, _arch(device))][padded_head_dim(head_dim)]
    if dtype == torch.float32:
        bm, bn, stages = max(16, bm // 2), max(16, bn // 2), min(stages, 2)
    bm = min(bm, max(16, _pow2(lq)))
    bn = min(bn, max(16, _pow2(lk)))
    if block_m is not None:
        bm = block_m
    if block_n is not None:
        bn = block_n
    return KernelConfig(bm, bn, warps, stages)
