"""Input checks of the Triton masked-attention kernel (no Triton import here).

Every check is written once, as a list of *problems* ``(exception type, message)``.
The public functions raise the first problem; :func:`triton_unsupported_reasons`
returns all messages, so the dispatcher and the kernel never disagree.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import Tensor

__all__ = [
    "MAX_HEAD_DIM",
    "SUPPORTED_DTYPES",
    "Problem",
    "device_capability",
    "interpreting",
    "padded_problems",
    "raise_first",
    "triton_unsupported_reasons",
    "varlen_problems",
    "varlen_value_problems",
]

Problem = tuple[type[Exception], str]

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 128
_INT32_MAX = 2**31 - 1


def interpreting() -> bool:
    """Whether Triton kernels run through Triton's CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


_CACHE: dict[object, object] = {}  # plain dict (not lru_cache): torch.compile traces through it quietly


def _triton_installed() -> bool:
    # find_spec touches the file system: look once per process, not on every call.
    if "triton" not in _CACHE:
        _CACHE["triton"] = importlib.util.find_spec("triton") is not None
    return bool(_CACHE["triton"])


def device_capability(device: torch.device) -> tuple[int, int]:
    """CUDA compute capability of ``device`` (cached per device index; no device work)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    key = ("capability", index)
    if key not in _CACHE:
        _CACHE[key] = tuple(torch.cuda.get_device_capability(index))
    return _CACHE[key]  # type: ignore[return-value]


def _shape(t: Tensor) -> list[int]:
    return list(t.shape)


def _environment_problems(q: Tensor) -> list[Problem]:
    out: list[Problem] = []
    if not _triton_installed():
        out.append((RuntimeError, "triton is not installed"))
        return out
    if q.device.type == "cuda":
        if q.dtype == torch.bfloat16 and device_capability(q.device)[0] < 8:
            out.append(
                (TypeError, "q is bfloat16, which the kernel supports on compute capability >= 8.0 only")
            )
    elif q.device.type == "cpu":
        if not interpreting():
            out.append(
                (
                    ValueError,
                    "q is a CPU tensor: the Triton kernel runs on CUDA tensors, or on CPU only when "
                    "TRITON_INTERPRET=1 is set before triton is imported",
                )
            )
    else:
        out.append((ValueError, f"q is on device {q.device}; the Triton kernel needs a CUDA device"))
    return out


def _qkv_problems(q: object, k: object, v: object, ndim: int, layout: str) -> list[Problem]:
    out: list[Problem] = []
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            out.append((TypeError, f"{name} must be a torch.Tensor, got {type(t).__name__}"))
    if out:
        return out
    assert isinstance(q, Tensor) and isinstance(k, Tensor) and isinstance(v, Tensor)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != ndim:
            out.append((ValueError, f"{name} must have shape {layout}, got {_shape(t)}"))
    if out:
        return out
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dtype not in SUPPORTED_DTYPES:
            out.append((TypeError, f"{name} must have dtype float16, bfloat16 or float32, got {t.dtype}"))
    if not out and not (q.dtype == k.dtype == v.dtype):
        out.append((TypeError, f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}"))
    for name, t in (("k", k), ("v", v)):
        if t.device != q.device:
            out.append(
                (ValueError, f"{name} is on {t.device} but q is on {q.device}; they must share a device")
            )
    return out


def _head_dim_problems(q: Tensor, k: Tensor, v: Tensor) -> list[Problem]:
    out: list[Problem] = []
    d = q.shape[-1]
    if k.shape[-1] != d or v.shape[-1] != d:
        out.append(
            (
                ValueError,
                f"q, k, v must share the head dim: q {_shape(q)}, k {_shape(k)}, v {_shape(v)}",
            )
        )
    if not 1 <= d <= MAX_HEAD_DIM:
        out.append(
            (
                ValueError,
                f"q has head dim {d} (shape {_shape(q)}); the kernel supports head dims 1..{MAX_HEAD_DIM}",
            )
        )
    return out


def _options_problems(dropout_p: object, scale: object, seed: object) -> list[Problem]:
    out: list[Problem] = []
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)):
        out.append((TypeError, f"dropout_p must be a float, got {type(dropout_p).__name__}"))
    elif not 0.0 <= float(dropout_p) < 1.0:
        out.append((ValueError, f"dropout_p must lie in [0, 1), got {dropout_p}"))
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            out.append((TypeError, f"scale must be a float or None, got {type(scale).__name__}"))
        elif not (float(scale) == float(scale) and abs(float(scale)) != float("inf")):
            out.append((ValueError, f"scale must be finite, got {scale}"))
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            out.append((TypeError, f"seed must be an int or None, got {type(seed).__name__}"))
        elif not 0 <= seed <= _INT32_MAX:
            out.append((ValueError, f"seed must lie in [0, 2**31 - 1], got {seed}"))
    return out


def _mask_problem(name: str, t: object, shape: tuple[int, int], dtypes: tuple[torch.dtype, ...], q: Tensor):
    if t is None:
        return None
    if not isinstance(t, Tensor):
        return (TypeError, f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
    if tuple(t.shape) != shape:
        return (ValueError, f"{name} must have shape [{shape[0]}, {shape[1]}], got {_shape(t)}")
    if t.dtype not in dtypes:
        names = " or ".join(str(d) for d in dtypes)
        return (TypeError, f"{name} must have dtype {names}, got {t.dtype}")
    if t.device != q.device:
        return (ValueError, f"{name} is on {t.device} but q is on {q.device}; they must share a device")
    return None


def padded_problems(
    q: object,
    k: object,
    v: object,
    *,
    key_lengths: object = None,
    key_valid: object = None,
    query_valid: object = None,
    dropout_p: object = 0.0,
    scale: object = None,
    seed: object = None,
) -> list[Problem]:
    """Problems with a padded call: ``q [B, H, Lq, D]``, ``k``/``v`` ``[B, H, Lk, D]``."""
    out = _qkv_problems(q, k, v, 4, "[B, H, L, D]")
    if out:
        return out
    assert isinstance(q, Tensor) and isinstance(k, Tensor) and isinstance(v, Tensor)
    b, h, lq, _ = q.shape
    lk = k.shape[2]
    if k.shape[:2] != (b, h) or v.shape[:2] != (b, h):
        out.append((ValueError, f"q, k, v must share B and H: q {_shape(q)}, k {_shape(k)}, v {_shape(v)}"))
    if v.shape[2] != lk:
        out.append((ValueError, f"k and v must share the key length: k {_shape(k)}, v {_shape(v)}"))
    out += _head_dim_problems(q, k, v)
    if key_lengths is not None and key_valid is not None:
        out.append((ValueError, "give key_lengths or key_valid, not both"))
    if key_lengths is not None:
        if not isinstance(key_lengths, Tensor):
            out.append(
                (TypeError, f"key_lengths must be a torch.Tensor or None, got {type(key_lengths).__name__}")
            )
        elif tuple(key_lengths.shape) != (b,):
            out.append((ValueError, f"key_lengths must have shape [{b}], got {_shape(key_lengths)}"))
        elif key_lengths.dtype not in (torch.int32, torch.int64):
            out.append(
                (
                    TypeError,
                    f"key_lengths must have dtype torch.int32 or torch.int64, got {key_lengths.dtype}",
                )
            )
        elif key_lengths.device != q.device:
            out.append((ValueError, f"key_lengths is on {key_lengths.device} but q is on {q.device}"))
    for name, t, shape in (("key_valid", key_valid, (b, lk)), ("query_valid", query_valid, (b, lq))):
        problem = _mask_problem(name, t, shape, (torch.bool,), q)
        if problem is not None:
            out.append(problem)
    out += _options_problems(dropout_p, scale, seed)
    if not out and isinstance(dropout_p, (int, float)) and dropout_p > 0 and lq * lk > _INT32_MAX:
        out.append(
            (
                ValueError,
                f"dropout needs Lq * Lk < 2**31 (per-head offsets), got q {_shape(q)}, k {_shape(k)}",
            )
        )
    if not out:
        out += _environment_problems(q)
    return out


def varlen_problems(
    q: object,
    k: object,
    v: object,
    cu_seqlens_q: object,
    cu_seqlens_k: object,
    max_seqlen_q: object,
    max_seqlen_k: object,
    *,
    dropout_p: object = 0.0,
    scale: object = None,
    seed: object = None,
) -> list[Problem]:
    """Problems with a packed call: ``q [Tq, H, D]``, ``k``/``v`` ``[Tk, H, D]``, ``cu_seqlens [B+1]``."""
    out = _qkv_problems(q, k, v, 3, "[T, H, D]")
    if out:
        return out
    assert isinstance(q, Tensor) and isinstance(k, Tensor) and isinstance(v, Tensor)
    h = q.shape[1]
    if k.shape[1] != h or v.shape[1] != h:
        out.append((ValueError, f"q, k, v must share H: q {_shape(q)}, k {_shape(k)}, v {_shape(v)}"))
    if v.shape[0] != k.shape[0]:
        out.append((ValueError, f"k and v must share the token count: k {_shape(k)}, v {_shape(v)}"))
    out += _head_dim_problems(q, k, v)
    cus = (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k))
    for name, cu in cus:
        if not isinstance(cu, Tensor):
            out.append((TypeError, f"{name} must be a torch.Tensor, got {type(cu).__name__}"))
        elif cu.dim() != 1 or cu.shape[0] < 1:
            out.append((ValueError, f"{name} must have shape [B + 1], got {_shape(cu)}"))
        elif cu.dtype != torch.int32:
            out.append((TypeError, f"{name} must have dtype torch.int32, got {cu.dtype}"))
        elif cu.device != q.device:
            out.append((ValueError, f"{name} is on {cu.device} but q is on {q.device}"))
    if not out and cu_seqlens_q.shape != cu_seqlens_k.shape:  # type: ignore[union-attr]
        out.append(
            (
                ValueError,
                f"cu_seqlens_q and cu_seqlens_k must both have shape [B + 1], got "
                f"{_shape(cu_seqlens_q)} and {_shape(cu_seqlens_k)}",  # type: ignore[arg-type]
            )
        )
    for name, m in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
        if isinstance(m, bool) or not isinstance(m, int):
            out.append((TypeError, f"{name} must be an int, got {type(m).__name__}"))
        elif m < 0:
            out.append((ValueError, f"{name} must be >= 0, got {m}"))
    out += _options_problems(dropout_p, scale, seed)
    if (
        not out
        and isinstance(dropout_p, (int, float))
        and dropout_p > 0
        and max_seqlen_q * max_seqlen_k > _INT32_MAX  # type: ignore[operator]
    ):
        out.append((ValueError, "dropout needs max_seqlen_q * max_seqlen_k < 2**31 (per-head offsets)"))
    if not out:
        out += _environment_problems(q)
    return out


def varlen_value_problems(
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    rows_q: int,
    rows_k: int,
    max_seqlen_q: int,
    max_seqlen_k: int,
    *,
    exact_ends: bool,
) -> list[Problem]:
    """Problems with the *values* of a packed call's ``cu_seqlens`` (their structure already checked:
    int32/int64 ``[B + 1]`` each, same shape).

    Sequence ``b`` holds rows ``[cu[b], cu[b + 1])`` of the packed tensor (``rows_q`` rows for
    ``q``, ``rows_k`` for ``k``/``v``). Both must be non-decreasing, with no sequence longer than
    its ``max_seqlen`` (a larger ``max_seqlen`` is fine). ``exact_ends=True``: ``cu[0] == 0`` and
    ``cu[-1] ==`` the row count (the tensors hold the sequences and nothing else); otherwise
    ``cu[0] >= 0`` and ``cu[-1] <=`` the row count.

    Cost: one device-to-host copy of both tensors together (``2 * (B + 1)`` integers; on CUDA,
    a synchronisation). The checks themselves run on that host copy.
    """
    host = torch.stack((cu_seqlens_q.to(torch.int64), cu_seqlens_k.to(torch.int64))).cpu()
    out: list[Problem] = []
    sides = (
        ("cu_seqlens_q", host[0], "q", rows_q, "max_seqlen_q", max_seqlen_q),
        ("cu_seqlens_k", host[1], "k", rows_k, "max_seqlen_k", max_seqlen_k),
    )
    for name, cu, tensor, rows, max_name, max_len in sides:
        first, last = int(cu[0]), int(cu[-1])
        if exact_ends and first != 0:
            out.append((ValueError, f"{name}[0] must be 0, got {first}"))
        elif first < 0:
            out.append((ValueError, f"{name}[0] must be >= 0, got {first}"))
        lengths = cu.diff()
        falling = (lengths < 0).nonzero()
        if falling.numel() > 0:
            i = int(falling[0, 0])
            out.append(
                (
                    ValueError,
                    f"{name} must be non-decreasing, got {name}[{i + 1}] = {int(cu[i + 1])} < "
                    f"{name}[{i}] = {int(cu[i])}",
                )
            )
        if exact_ends and last != rows:
            out.append(
                (
                    ValueError,
                    f"{name}[-1] = {last} but {tensor} has {rows} rows; they must be equal "
                    f"(every row of {tensor} belongs to one sequence)",
                )
            )
        elif last > rows:
            out.append(
                (ValueError, f"{name}[-1] = {last} but {tensor} has {rows} rows; it must be <= {rows}")
            )
        if lengths.numel() > 0 and int(lengths.max()) > max_len:
            b = int(lengths.argmax())
            out.append(
                (
                    ValueError,
                    f"{max_name} = {max_len} but sequence {b} has {int(lengths[b])} rows "
                    f"({name}[{b + 1}] - {name}[{b}]); {max_name} must be >= the longest sequence",
                )
            )
    return out


def raise_first(problems: list[Problem]) -> None:
    """Raise the first problem, if any."""
    if problems:
        exc, msg = problems[0]
        raise exc(msg)


def triton_unsupported_reasons(
    q: object,
    k: object,
    v: object,
    *,
    key_lengths: object = None,
    key_valid: object = None,
    query_valid: object = None,
    dropout_p: object = 0.0,
    scale: object = None,
    cu_seqlens_q: object = None,
    cu_seqlens_k: object = None,
    max_seqlen_q: object = None,
    max_seqlen_k: object = None,
) -> list[str]:
    """Why :func:`flash_attention` (or, with ``cu_seqlens_*``, :func:`flash_attention_varlen`)
    cannot take these inputs; an empty list means it can.

    The same checks run inside the kernel's launchers, which raise the first one. Checks
    that need the *values* of lengths or ``cu_seqlens`` (a host sync) are not made here.
    """
    if cu_seqlens_q is not None or cu_seqlens_k is not None:
        problems = varlen_problems(
            q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=dropout_p, scale=scale
        )
    else:
        problems = padded_problems(
            q,
            k,
            v,
            key_lengths=key_lengths,
            key_valid=key_valid,
            query_valid=query_valid,
            dropout_p=dropout_p,
            scale=scale,
        )
    return [msg for _, msg in problems]
