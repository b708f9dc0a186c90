"""The public masked-attention op and its backend dispatch.

``backend="auto"`` picks, in order, the first backend able to run the call:

- CUDA with a mask: ``triton`` (maskmm's fused kernel: skips padded key/query tiles) > ``sdpa``;
- CUDA without a mask: ``sdpa`` (nothing to skip, and SDPA's cuDNN / flash kernels are the
  fastest dense kernels, dispatched from C++ with less host overhead);
- any other device (CPU): ``sdpa``;
- ``reference`` if none of them can.

``flex`` is never picked automatically: compiled FlexAttention specialises on shapes, so every
new sequence length recompiles (seconds), and past ``torch._dynamo``'s recompile limit it runs
un-fused; ask for it by name where shapes are fixed.

An explicitly named backend that cannot run the call raises ``ValueError`` listing every
reason. :func:`explain` returns the reasons of every backend; :func:`available_backends`
the backends usable on a device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from maskmm._checks import (
    check_bool,
    check_floating,
    check_generator,
    check_int,
    check_ratio,
    check_same_device,
    check_tensor,
)

from .backends import BACKENDS, AttentionBackend
from .mask import AttentionMask
from .packing import packed_positions, pad_packed, unpad_to_packed

__all__ = [
    "BACKEND_NAMES",
    "available_backends",
    "explain",
    "masked_attention",
    "masked_attention_varlen",
    "select_backend",
]

BACKEND_NAMES = ("auto", "triton", "flex", "sdpa", "xformers", "reference")
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _auto_order(device_type: str, masked: bool) -> tuple[str, ...]:
    """Backends ``auto`` tries, in order (see the module docs for why)."""
    if device_type == "cuda":
        return ("triton", "sdpa") if masked else ("sdpa",)
    return ("sdpa",)


def _check_scale(scale: object) -> float | None:
    if scale is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return float(scale)


def _check_backend(backend: object) -> str:
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {', '.join(BACKEND_NAMES)}; got {backend!r}")
    return backend


def _check_qkv(q: object, k: object, v: object, ndim: int) -> None:
    layout = "[B, H, L, D]" if ndim == 4 else "[T, H, D]"
    for name, t in (("q", q), ("k", k), ("v", v)):
        if isinstance(t, torch.Tensor) and t.dim() != ndim:
            raise ValueError(f"{name} must have shape {layout} ({ndim} dims), got {list(t.shape)}")
    qt = check_floating("q", q, ndim=ndim, dtype=_DTYPES)
    kt = check_floating("k", k, ndim=ndim, dtype=_DTYPES)
    vt = check_floating("v", v, ndim=ndim, dtype=_DTYPES)
    if not (qt.dtype == kt.dtype == vt.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {qt.dtype}, {kt.dtype}, {vt.dtype}")
    check_same_device(q=qt, k=kt, v=vt)
    qs, ks, vs = qt.shape, kt.shape, vt.shape
    shared = slice(0, 2) if ndim == 4 else slice(1, 2)  # (B, H) or (H,)
    if qs[shared] != ks[shared] or ks[:-1] != vs[:-1]:
        raise ValueError(
            f"q, k, v must have shapes {layout} with matching batch/heads and k, v sharing L; got "
            f"q {list(qs)}, k {list(ks)}, v {list(vs)}"
        )
    if qs[-1] != ks[-1]:
        raise ValueError(f"q and k must share the head dim D; got q {list(qs)}, k {list(ks)}")


def _check_mask(mask: object, q: Tensor, k: Tensor) -> AttentionMask | None:
    if mask is None:
        return None
    if not isinstance(mask, AttentionMask):
        raise TypeError(f"mask must be a maskmm.attention.AttentionMask or None, got {type(mask).__name__}")
    b, lq, lk = q.shape[0], q.shape[2], k.shape[2]
    if mask.key_valid.shape != (b, lk):
        raise ValueError(
            f"mask.key_valid must have shape [B, Lk] = [{b}, {lk}] (from q {list(q.shape)}, "
            f"k {list(k.shape)}), got {list(mask.key_valid.shape)}"
        )
    if mask.query_valid is not None and mask.query_valid.shape != (b, lq):
        raise ValueError(
            f"mask.query_valid must have shape [B, Lq] = [{b}, {lq}] (from q {list(q.shape)}), "
            f"got {list(mask.query_valid.shape)}"
        )
    check_same_device(q=q, mask=mask.key_valid)
    return mask


def _validate(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: object,
    dropout_p: object,
    scale: object,
    backend: object,
    generator: object,
) -> tuple[AttentionMask | None, float, float | None, str]:
    _check_qkv(q, k, v, ndim=4)
    mask = _check_mask(mask, q, k)
    return (mask, *_check_options(dropout_p, scale, backend, generator, q.device))


def _check_options(
    dropout_p: object, scale: object, backend: object, generator: object, device: torch.device
) -> tuple[float, float | None, str]:
    p = check_ratio("dropout_p", dropout_p)
    s = _check_scale(scale)
    name = _check_backend(backend)
    check_generator("generator", generator, device)  # type: ignore[arg-type]
    return p, s, name


def select_backend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: AttentionMask | None = None,
    *,
    dropout_p: float = 0.0,
    scale: float | None = None,
    backend: str = "auto",
    generator: torch.Generator | None = None,
) -> AttentionBackend:
    """The backend that :func:`masked_attention` would run (inputs assumed validated).

    Raises ``ValueError`` listing the reasons when an explicitly named backend cannot run.
    """
    if backend != "auto":
        chosen = BACKENDS[backend]
        reasons = chosen.unsupported_reasons(q, k, v, mask, dropout_p, scale=scale, generator=generator)
        if reasons:
            raise ValueError(f"attention backend {backend!r} cannot run this call: " + "; ".join(reasons))
        return chosen
    for name in _auto_order(q.device.type, mask is not None):
        candidate = BACKENDS[name]
        if not candidate.unsupported_reasons(q, k, v, mask, dropout_p, scale=scale, generator=generator):
            return candidate
    return BACKENDS["reference"]


def masked_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: AttentionMask | None = None,
    *,
    dropout_p: float = 0.0,
    scale: float | None = None,
    backend: str = "auto",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Softmax attention with padding masks: ``softmax(q k^T * scale + mask) v``.

    Args:
        q: ``[B, H, Lq, D]``; k: ``[B, H, Lk, D]``; v: ``[B, H, Lk, Dv]``; one floating dtype
            (fp16/bf16/fp32; fp64 on the reference and sdpa backends), one device.
        mask: key validity (``True`` = may be attended) and optional query validity, built
            once per batch; ``None`` = every key and query valid.
        dropout_p: attention-probability dropout in ``[0, 1)`` (pass 0 in eval).
        scale: softmax scale; ``None`` = ``1 / sqrt(D)``.
        backend: ``"auto"``, ``"triton"``, ``"flex"``, ``"sdpa"``, ``"xformers"`` or
            ``"reference"`` (see module docs for the ``auto`` order).
        generator: source of dropout randomness (same seed, same device -> same output).

    Returns:
        ``[B, H, Lq, Dv]`` in ``q.dtype``. Rows whose query is invalid or that have no
        valid key are zeros and pass zero gradient, on every backend. Empty inputs
        (``B``, ``H``, ``Lq`` or ``Lk`` zero) give zeros.

    Raises:
        TypeError / ValueError naming the argument for bad input; ValueError listing the
        reasons when the named backend cannot run the call.
    """
    mask, dropout_p, scale, backend = _validate(q, k, v, mask, dropout_p, scale, backend, generator)
    if q.numel() == 0 or k.numel() == 0 or v.numel() == 0:
        # Nothing to attend (or nobody asking): the plain definition gives well-defined zeros.
        return BACKENDS["reference"](q, k, v, mask, dropout_p=dropout_p, scale=scale, generator=generator)
    chosen = select_backend(
        q, k, v, mask, dropout_p=dropout_p, scale=scale, backend=backend, generator=generator
    )
    return chosen(q, k, v, mask, dropout_p=dropout_p, scale=scale, generator=generator)


def _check_cu(name: str, cu: object, batch_plus_one: int | None) -> Tensor:
    shape = (None,) if batch_plus_one is None else (batch_plus_one,)
    t = check_tensor(name, cu, shape=shape, dtype=(torch.int32, torch.int64))
    if t.shape[0] < 1:
        raise ValueError(f"{name} must have shape [B + 1] (at least one entry), got [0]")
    return t


def _check_cu_values(cu_q: Tensor, cu_k: Tensor, q: Tensor, k: Tensor, max_q: int, max_k: int) -> None:
    """Raise ``ValueError`` naming the argument unless the ``cu_seqlens`` describe ``q`` and ``k`` exactly.

    One host read of both ``cu_seqlens`` together (see ``varlen_value_problems``).
    """
    from maskmm.kernels.attention._validate import raise_first, varlen_value_problems

    problems = varlen_value_problems(cu_q, cu_k, q.shape[0], k.shape[0], max_q, max_k, exact_ends=True)
    raise_first(problems)


def masked_attention_varlen(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    *,
    dropout_p: float = 0.0,
    scale: float | None = None,
    backend: str = "auto",
    generator: torch.Generator | None = None,
    check_values: bool = True,
) -> Tensor:
    """Attention over packed variable-length sequences.

    Args:
        q: ``[Tq, H, D]``; k: ``[Tk, H, D]``; v: ``[Tk, H, Dv]``: the tokens of ``B``
            sequences back to back; sequence ``b`` attends only within itself.
        cu_seqlens_q, cu_seqlens_k: ``int32 [B + 1]`` (int64 accepted) cumulative starts on
            the device of ``q``: sequence ``b`` holds rows ``[cu[b], cu[b + 1])``, so ``cu[0] = 0``,
            ``cu`` is non-decreasing (empty sequences allowed) and ``cu[B]`` is the number of
            rows (``Tq`` for ``cu_seqlens_q``, ``Tk`` for ``cu_seqlens_k``).
        max_seqlen_q, max_seqlen_k: at least the longest query / key sequence. A larger value
            is allowed (e.g. a fixed bound that keeps shapes static): it sizes the padded
            layout (or the kernel's grid) and the positions dropout is drawn over, and the
            extra positions are padding.
        dropout_p, scale, backend, generator: as in :func:`masked_attention`.
        check_values: verify the values above on every backend before anything runs: one
            host read of ``cu_seqlens_q`` and ``cu_seqlens_k`` together (``2 * (B + 1)``
            integers; a synchronisation on CUDA), skipped while ``torch.compile`` traces.
            Pass ``False`` where the caller built or checked them already (e.g. a training
            loop that computes ``cu_seqlens`` itself): nothing is read then, and values that
            break the rules give unspecified numbers but never an out-of-bounds access
            (every backend keeps its reads and writes inside ``q``, ``k``, ``v`` and the output).

    Returns:
        ``[Tq, H, Dv]``. A query whose sequence has no key gets a zero row (zero gradient).

    Raises:
        TypeError / ValueError naming the argument for bad input (with ``check_values``, e.g.
        ``cu_seqlens_q[-1] = 40 but q has 37 rows``); ValueError listing the reasons when the
        named backend cannot run the call.

    The ``triton`` backend runs the packed layout natively; every other backend runs on the
    equivalent padded batch (index ops, no host sync) and the result is re-packed, so
    packed and padded calls agree.
    """
    _check_qkv(q, k, v, ndim=3)
    cu_q = _check_cu("cu_seqlens_q", cu_seqlens_q, None)
    cu_k = _check_cu("cu_seqlens_k", cu_seqlens_k, cu_q.shape[0])
    check_same_device(q=q, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    max_q = check_int("max_seqlen_q", max_seqlen_q)
    max_k = check_int("max_seqlen_k", max_seqlen_k)
    dropout_p, scale, backend = _check_options(dropout_p, scale, backend, generator, q.device)
    if check_bool("check_values", check_values) and not torch.compiler.is_compiling():
        _check_cu_values(cu_q, cu_k, q, k, max_q, max_k)

    triton = BACKENDS["triton"]
    if backend in ("auto", "triton") and q.numel() > 0 and k.numel() > 0:
        reasons = triton.varlen_unsupported_reasons(  # type: ignore[attr-defined]
            q, k, v, cu_q, cu_k, max_q, max_k, dropout_p, scale=scale
        )
        if backend == "triton" and reasons:
            raise ValueError("attention backend 'triton' cannot run this call: " + "; ".join(reasons))
        if not reasons and (backend == "triton" or q.device.type == "cuda"):
            return triton.varlen(  # type: ignore[attr-defined]
                q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=dropout_p, scale=scale, generator=generator
            )

    batch = cu_q.shape[0] - 1
    sample_q, pos_q = packed_positions(cu_q, q.shape[0], max_q)
    sample_k, pos_k = packed_positions(cu_k, k.shape[0], max_k)
    qp = pad_packed(q, sample_q, pos_q, batch, max_q)
    kp = pad_packed(k, sample_k, pos_k, batch, max_k)
    vp = pad_packed(v, sample_k, pos_k, batch, max_k)
    mask = AttentionMask.from_cu_seqlens(cu_k, max_k, cu_q, max_q)
    out = masked_attention(
        qp, kp, vp, mask, dropout_p=dropout_p, scale=scale, backend=backend, generator=generator
    )
    return unpad_to_packed(out, sample_q, pos_q)


def explain(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: AttentionMask | None = None,
    *,
    dropout_p: float = 0.0,
    scale: float | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, list[str]]:
    """For every backend, the reasons it cannot run this call (empty list = it can).

    The extra key ``"auto"`` holds one entry: the name of the backend ``auto`` would pick.
    """
    mask, dropout_p, scale, _ = _validate(q, k, v, mask, dropout_p, scale, "auto", generator)
    out = {
        name: be.unsupported_reasons(q, k, v, mask, dropout_p, scale=scale, generator=generator)
        for name, be in BACKENDS.items()
    }
    picked = select_backend(q, k, v, mask, dropout_p=dropout_p, scale=scale, generator=generator)
    out["auto"] = [picked.name]
    return out


def available_backends(
    device: torch.device | str | None = None, *, dtype: torch.dtype | None = None
) -> list[str]:
    """Backends able to run a small masked, differentiable call on ``device``.

    ``device`` defaults to CUDA when available, else CPU; ``dtype`` to float16 on CUDA and
    float32 elsewhere. (A backend listed here may still decline particular shapes.)
    """
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    dt = dtype if dtype is not None else (torch.float16 if dev.type == "cuda" else torch.float32)
    q = torch.zeros(1, 1, 16, 16, device=dev, dtype=dt)
    mask = AttentionMask.from_key_valid(torch.ones(1, 16, dtype=torch.bool, device=dev))
    reasons = explain(q, q, q, mask)
    return [name for name in BACKENDS if not reasons[name]]
