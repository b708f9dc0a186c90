"""``xformers`` backend: ``xformers.ops.memory_efficient_attention`` (CUDA).

Used only when ``xformers.ops`` imports AND its compiled operators load for the installed
torch (xformers wheels are built against one torch version; a mismatch imports fine but
has no kernels). Detection happens once, lazily, at the first call that asks (import, then one
tiny call per device); xformers' import-time warnings are silenced unless ``XFORMERS_MORE_DETAILS=1`` is set.

The mask is the cached additive bias ``[B, H, Lq, Lk]`` (an expanded view of a
``[B, 1, 1, Lk8]`` tensor whose last dim is padded to a multiple of 8, as xformers
requires); a sample with no valid key attends to key 0 and invalid rows are zeroed
afterwards, as for SDPA. Seeded dropout re-seeds the device generator around the call.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .base import run_seeded, zero_invalid_rows

if TYPE_CHECKING:
    from ..mask import AttentionMask

__all__ = ["XformersBackend"]


@functools.lru_cache(maxsize=1)
def _xformers_ops() -> tuple[Any, str | None]:
    """``(xformers.ops, None)`` or ``(None, reason)``; evaluated once per process."""
    if importlib.util.find_spec("xformers") is None:
        return None, "xformers: not installed"
    verbose = os.environ.get("XFORMERS_MORE_DETAILS", "0") not in ("", "0")
    logger = logging.getLogger("xformers")
    old_level = logger.level
    try:
        with warnings.catch_warnings():
            if not verbose:
                warnings.simplefilter("ignore")
                logger.setLevel(logging.ERROR)
            import xformers
            import xformers.ops as xops
    except Exception as exc:
        return None, f"xformers: xformers.ops failed to import ({type(exc).__name__}: {exc})"
    finally:
        logger.setLevel(old_level)
    if not getattr(xformers, "_has_cpp_library", False):
        return None, (
            f"xformers: compiled operators do not load for torch {torch.__version__} "
            f"(xformers {getattr(xformers, '__version__', '?')} was built for another torch)"
        )
    return xops, None


@functools.lru_cache(maxsize=16)
def _probe(device: str) -> str | None:
    """Run one tiny call on ``device`` (once per device): ``None`` if the compiled ops work."""
    xops, why = _xformers_ops()
    if xops is None:
        return why
    try:
        x = torch.zeros(1, 8, 1, 16, dtype=torch.float16, device=device)
        xops.memory_efficient_attention(x, x, x)
    except Exception as exc:
        first_line = (str(exc).splitlines() or [""])[0][:200]
        return f"xformers: its operators fail on {device} ({type(exc).__name__}: {first_line})"
    return None


def _bias(mask: AttentionMask, dtype: torch.dtype, heads: int, q_len: int) -> Tensor:
    def build() -> Tensor:
        lk = mask.key_len
        storage = torch.full(
            (mask.batch_size, 1, 1, (lk + 7) // 8 * 8), float("-inf"), dtype=dtype, device=mask.device
        )
        storage[..., :lk].masked_fill_(mask.sdpa_mask(), 0.0)
        return storage[..., :lk].expand(mask.batch_size, heads, q_len, lk)

    return mask.cached(("xformers_bias", dtype, heads, q_len), build)


class XformersBackend:
    name = "xformers"

    def unsupported_reasons(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: AttentionMask | None,
        dropout_p: float,
        *,
        scale: float | None,
        generator: torch.Generator | None,
    ) -> list[str]:
        _, why = _xformers_ops()
        reasons = [] if why is None else [why]
        if q.device.type != "cuda":
            reasons.append(f"xformers: needs CUDA tensors, got {q.device}")
        elif why is None and (failure := _probe(str(q.device))) is not None:
            reasons.append(failure)
        if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            reasons.append(f"xformers: dtype {q.dtype} is not supported (float16/bfloat16/float32)")
        if max(q.shape[-1], v.shape[-1]) > 256:
            reasons.append(f"xformers: head dim {max(q.shape[-1], v.shape[-1])} > 256")
        return reasons

    def __call__(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: AttentionMask | None,
        *,
        dropout_p: float,
        scale: float | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        xops, why = _xformers_ops()
        if xops is None:
            raise RuntimeError(why)
        bias = None if mask is None else _bias(mask, q.dtype, q.shape[1], q.shape[2])
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # [B, L, H, D]

        def run() -> Tensor:
            return xops.memory_efficient_attention(qt, kt, vt, attn_bias=bias, p=dropout_p, scale=scale)

        out = run_seeded(run, dropout_p, generator, q.device)
        return zero_invalid_rows(out.transpose(1, 2), mask)
