"""Public entry points of the Triton masked flash-attention kernel.

Importing this module does not import Triton; the kernels load on the first call.
On CPU the kernels run only through Triton's interpreter: set ``TRITON_INTERPRET=1``
before ``triton`` is first imported (tests do); CUDA tensors need no setting.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._validate import interpreting, padded_problems, raise_first, varlen_problems, varlen_value_problems

__all__ = [
    "attention_dropout_mask",
    "attention_with_bounds",
    "flash_attention",
    "flash_attention_varlen",
    "last_true_plus_one",
]

_INT32_MAX = 2**31 - 1


def _check_blocks(block_m: object, block_n: object) -> None:
    for name, value in (("block_m", block_m), ("block_n", block_n)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int or None, got {type(value).__name__}")
        if value < 16 or value & (value - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {value}")


def _draw_seed(seed: int | None, dropout_p: float) -> int:
    if seed is not None or dropout_p == 0.0:
        return 0 if seed is None else seed
    # Drawn from torch's default CPU generator: reproducible under torch.manual_seed and
    # no device synchronisation.
    return int(torch.randint(0, _INT32_MAX, (1,)).item())


def flash_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    key_lengths: Tensor | None = None,
    key_valid: Tensor | None = None,
    query_valid: Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    seed: int | None = None,
    check_values: bool = True,
    block_m: int | None = None,
    block_n: int | None = None,
) -> Tensor:
    """Masked softmax attention, fused (forward and backward in Triton).

    Args:
        q: ``[B, H, Lq, D]``; ``k``, ``v``: ``[B, H, Lk, D]``; float16, bfloat16 or float32, one
            dtype; any strides (a last dim with stride != 1 is copied contiguous). ``1 <= D <= 128``
            (non-powers of two are padded inside the kernel). ``Lq != Lk`` is allowed.
        key_lengths: int32/int64 ``[B]``: keys ``[0, key_lengths[b])`` are valid (a prefix).
        key_valid: bool ``[B, Lk]``, ``True`` = may be attended. At most one of the two.
        query_valid: bool ``[B, Lq]``; ``False`` rows return zeros and receive zero gradient.
        scale: softmax scale, default ``1 / sqrt(D)``.
        dropout_p: attention-probability dropout in ``[0, 1)``; kept probabilities are scaled by
            ``1 / (1 - dropout_p)``. The keep-mask is a function of ``(seed, b, h, i, j)`` only, see
            :func:`attention_dropout_mask`.
        seed: dropout seed in ``[0, 2**31)``; ``None`` draws one from torch's default CPU generator.
        check_values: verify ``0 <= key_lengths <= Lk`` (one host sync when ``key_lengths`` is given;
            skipped while ``torch.compile`` traces). Out-of-range lengths are clamped either way.
        block_m, block_n: tile sizes (powers of two >= 16) overriding the tuned table, all passes.

    Returns:
        ``[B, H, Lq, D]`` in ``q.dtype`` (strided like ``q`` when ``q`` is dense). A query row with no
        valid key, or an invalid query, is zero and passes zero gradient.

    Key tiles at or beyond a sample's last valid key (``key_lengths[b]``, or the last ``True`` of
    ``key_valid[b]``) are never loaded; query tiles without a valid query do no work.

    Raises:
        TypeError / ValueError naming the argument, before any launch (see
        :func:`triton_unsupported_reasons` for the same checks as a list).
    """
    raise_first(
        padded_problems(
            q,
            k,
            v,
            key_lengths=key_lengths,
            key_valid=key_valid,
            query_valid=query_valid,
            dropout_p=dropout_p,
            scale=scale,
            seed=seed,
        )
    )
    _check_blocks(block_m, block_n)
    lk = k.shape[2]
    if (
        check_values
        and not torch.compiler.is_compiling()
        and key_lengths is not None
        and key_lengths.numel() > 0
        and bool(((key_lengths < 0) | (key_lengths > lk)).any())
    ):
        raise ValueError(
            f"key_lengths must lie in [0, {lk}] (k has shape {list(k.shape)}), got {key_lengths}"
        )
    if key_lengths is not None:
        k_bound = key_lengths.clamp(0, lk).to(torch.int32)
    elif key_valid is not None:
        k_bound = last_true_plus_one(key_valid)
    else:
        k_bound = None
    return attention_with_bounds(
        q,
        k,
        v,
        k_bound=k_bound,
        q_bound=None if query_valid is None else last_true_plus_one(query_valid),
        key_valid=key_valid,
        query_valid=query_valid,
        scale=scale,
        dropout_p=float(dropout_p),
        seed=seed,
        block_m=block_m,
        block_n=block_n,
    )


def last_true_plus_one(mask: Tensor) -> Tensor:
    """int32 ``[B]``: index of the last ``True`` per row plus one (0 for an all-``False`` row).

    Vectorised, no host sync.
    """
    b, length = mask.shape
    if length == 0:
        return torch.zeros(b, dtype=torch.int32, device=mask.device)
    pos = torch.arange(1, length + 1, device=mask.device, dtype=torch.int32)
    return (mask.to(torch.int32) * pos).amax(dim=1).to(torch.int32)


def attention_with_bounds(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    k_bound: Tensor | None,
    q_bound: Tensor | None,
    key_valid: Tensor | None,
    query_valid: Tensor | None,
    scale: float | None,
    dropout_p: float,
    seed: int | None,
    block_m: int | None = None,
    block_n: int | None = None,
) -> Tensor:
    """:func:`flash_attention` after validation, with the per-sample loop bounds precomputed.

    For callers that validated the inputs already (``triton_unsupported_reasons`` is empty) and
    may reuse the bounds across calls. ``maskmm.attention`` caches the bounds on the batch's
    mask, so the layers of an encoder sharing it compute them once; its dispatcher still runs
    ``triton_unsupported_reasons`` on every call, so what is skipped here is only the entry
    point's second, raising pass of the same checks and its optional ``key_lengths`` range check.

    Args:
        k_bound: int32 ``[B]``: keys at or beyond are never read (``None`` = ``Lk``). Values above
            ``Lk`` act as ``Lk``, values ``<= 0`` as "no valid key".
        q_bound: int32 ``[B]``: queries at or beyond output zeros (``None`` = ``Lq``).
        key_valid, query_valid: bool masks (``None`` = every key / query below its bound is valid).
        seed: dropout seed, ``None`` draws one from torch's default CPU generator (no device sync).
    """
    b, _, lq, _ = q.shape
    lk = k.shape[2]
    if k_bound is None:
        k_bound = torch.full((b,), lk, dtype=torch.int32, device=q.device)
    if q_bound is None:
        q_bound = torch.full((b,), lq, dtype=torch.int32, device=q.device)
    return _apply(
        q,
        k,
        v,
        varlen=False,
        batch=b,
        lq=lq,
        lk=lk,
        q_bound=q_bound,
        k_bound=k_bound,
        cu_q=None,
        cu_k=None,
        q_valid=None if query_valid is None else query_valid.contiguous().view(torch.uint8),
        k_valid=None if key_valid is None else key_valid.contiguous().view(torch.uint8),
        scale=scale,
        dropout_p=dropout_p,
        seed=seed,
        block_m=block_m,
        block_n=block_n,
    )


def _apply(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float | None,
    dropout_p: float,
    seed: int | None,
    **fields,
) -> Tensor:
    """Run the kernels on validated inputs; ``fields`` are the layout and bound fields of ``AttnProblem``."""
    from ._autograd import FlashAttentionFn
    from ._launch import AttnProblem, unit_last_stride

    d = q.shape[-1]
    problem = AttnProblem(
        heads=q.shape[-2] if fields["varlen"] else q.shape[1],
        head_dim=d,
        sm_scale=1.0 / math.sqrt(d) if scale is None else float(scale),
        dropout_p=float(dropout_p),
        seed=_draw_seed(seed, float(dropout_p)),
        **fields,
    )
    return FlashAttentionFn.apply(unit_last_stride(q), unit_last_stride(k), unit_last_stride(v), problem)


def flash_attention_varlen(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    *,
    scale: float | None = None,
    dropout_p: float = 0.0,
    seed: int | None = None,
    check_values: bool = True,
    block_m: int | None = None,
    block_n: int | None = None,
) -> Tensor:
    """Masked attention over packed variable-length sequences (same kernels, row offsets).

    Args:
        q: ``[Tq, H, D]``; ``k``, ``v``: ``[Tk, H, D]``: sequences laid end to end.
        cu_seqlens_q, cu_seqlens_k: int32 ``[B + 1]``: sequence ``b`` holds rows
            ``[cu[b], cu[b + 1])``.
        max_seqlen_q, max_seqlen_k: upper bounds of the lengths. They size the grid and key the
            dropout offsets: with ``Lq = max_seqlen_q`` and ``Lk = max_seqlen_k``, padding the same
            sequences and calling :func:`flash_attention` gives identical results, dropout included.
        check_values: verify that each ``cu_seqlens`` is non-decreasing, starts at ``>= 0``, ends
            within its tensor (``cu[-1] <= T``) and holds no sequence longer than its ``max_seqlen``
            (one host read of both ``cu_seqlens`` together, a sync on CUDA; skipped while
            ``torch.compile`` traces). Unchecked values that break these rules give unspecified
            numbers but never an out-of-bounds access: the kernels clamp every sequence into the
            rows of ``q`` / ``k``; rows beyond ``max_seqlen`` of a sequence are left zero.
        scale, dropout_p, seed, block_m, block_n: as in :func:`flash_attention`.

    Returns:
        ``[Tq, H, D]`` in ``q.dtype``; a query of an empty key sequence is zero (zero gradient),
        and so is any row outside every sequence.
    """
    raise_first(
        varlen_problems(
            q,
            k,
            v,
            cu_seqlens_q,
            cu_seqlens_k,
            max_seqlen_q,
            max_seqlen_k,
            dropout_p=dropout_p,
            scale=scale,
            seed=seed,
        )
    )
    _check_blocks(block_m, block_n)
    if check_values and not torch.compiler.is_compiling():
        raise_first(
            varlen_value_problems(
                cu_seqlens_q,
                cu_seqlens_k,
                q.shape[0],
                k.shape[0],
                max_seqlen_q,
                max_seqlen_k,
                exact_ends=False,
            )
        )

    return _apply(
        q,
        k,
        v,
        varlen=True,
        batch=cu_seqlens_q.shape[0] - 1,
        lq=max_seqlen_q,
        lk=max_seqlen_k,
        q_bound=cu_seqlens_q.diff().to(torch.int32),
        k_bound=cu_seqlens_k.diff().to(torch.int32),
        cu_q=cu_seqlens_q.contiguous(),
        cu_k=cu_seqlens_k.contiguous(),
        q_valid=None,
        k_valid=None,
        scale=scale,
        dropout_p=dropout_p,
        seed=seed,
        block_m=block_m,
        block_n=block_n,
    )


def attention_dropout_mask(
    seed: int,
    batch: int,
    heads: int,
    lq: int,
    lk: int,
    dropout_p: float,
    device: torch.device | str,
) -> Tensor:
    """The keep-mask (bool ``[B, H, Lq, Lk]``, ``True`` = kept) the kernels use for ``seed``.

    Drawn by a small Triton kernel with the same Philox key ``(seed, b * H + h)`` and offsets
    ``i * Lk + j`` as the attention kernels, so ``attention_reference(..., dropout_mask=mask)``
    replays a kernel call exactly. For the packed layout pass ``lq = max_seqlen_q``,
    ``lk = max_seqlen_k``; ``i``/``j`` are positions inside each sequence.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed <= _INT32_MAX:
        raise ValueError(f"seed must lie in [0, 2**31 - 1], got {seed}")
    for name, value in (("batch", batch), ("heads", heads), ("lq", lq), ("lk", lk)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if lq * lk > _INT32_MAX:
        raise ValueError(f"lq * lk must be < 2**31 (per-head offsets), got lq={lq}, lk={lk}")
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)):
        raise TypeError(f"dropout_p must be a float, got {type(dropout_p).__name__}")
    if not 0.0 <= float(dropout_p) < 1.0:
        raise ValueError(f"dropout_p must lie in [0, 1), got {dropout_p}")
    device = torch.device(device)
    if device.type == "cpu" and not interpreting():
        raise ValueError(
            "device is cpu: the Triton kernel runs on CUDA, or on CPU only with TRITON_INTERPRET=1"
        )
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be a CUDA device (or cpu with TRITON_INTERPRET=1), got {device}")

    from ._launch import dropout_keep_mask

    return dropout_keep_mask(seed, batch, heads, lq, lk, float(dropout_p), device)
