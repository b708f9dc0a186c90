"""``triton`` backend: maskmm's fused Triton kernel (``maskmm.kernels.attention``).

CUDA tensors only; on CPU it runs solely under the Triton interpreter (``TRITON_INTERPRET=1``
set before Triton is first imported), which is for tests at tiny shapes. The kernel module
is imported lazily, on the first call that needs it.

Masks: the kernel's per-sample loop bounds (last valid key / query + 1, int32) are computed
once per :class:`AttentionMask` and cached on it, so every layer sharing the mask launches the
kernel directly. Keys known to be a prefix (masks built from lengths) pass no boolean key mask;
otherwise ``key_valid`` is passed too (positions inside the bound may still be invalid).
The dispatcher validates each call once (:meth:`TritonBackend.unsupported_reasons`); the launch
does not repeat the checks. Packed inputs use ``flash_attention_varlen`` directly, after the
dispatcher's one host read of the ``cu_seqlens`` values.

The dispatch path is traceable by ``torch.compile`` (the kernel's launchers are registered
custom operators), so compiled models keep the fused kernel without graph breaks.

Dropout happens in-kernel, seeded by an int drawn from ``generator`` (see
:func:`~maskmm.attention.backends.base.seed_from_generator`: a CUDA generator costs a host
sync). Without a generator the seed is drawn from torch's default CPU generator: reproducible
under ``torch.manual_seed`` and free of device syncs.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .base import dropout_seed

if TYPE_CHECKING:
    from ..mask import AttentionMask

__all__ = ["TritonBackend"]

_KERNEL_NAMES = (
    "flash_attention",
    "flash_attention_varlen",
    "attention_dropout_mask",
    "triton_unsupported_reasons",
)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


_KERNELS: ModuleType | None = None  # set on the first successful import


def _kernels() -> tuple[ModuleType | None, str | None]:
    """``(maskmm.kernels.attention, None)`` or ``(None, reason)``; a success is cached."""
    global _KERNELS
    if _KERNELS is not None:
        return _KERNELS, None
    if importlib.util.find_spec("triton") is None:
        return None, "triton: the triton package is not installed"
    try:
        import maskmm.kernels.attention as mod
    except Exception as exc:  # a broken kernel build must not break the other backends
        return None, f"triton: importing maskmm.kernels.attention failed ({type(exc).__name__}: {exc})"
    missing = [n for n in _KERNEL_NAMES if not hasattr(mod, n)]
    if missing:
        return None, f"triton: maskmm.kernels.attention does not provide {', '.join(missing)}"
    _KERNELS = mod
    return mod, None


def _bounds(mask: AttentionMask | None) -> dict[str, Tensor | None]:
    """The kernel's per-sample loop bounds and masks for ``mask``, cached on the mask.

    Built once per mask (int32 casts, last-valid-position reductions; they depend on the
    mask alone), then reused by every layer that shares the mask. Keys known to be a prefix (masks built from
    lengths) pass no boolean key mask, so the kernel reads no mask bytes at all.
    """
    from maskmm.kernels.attention.flash import last_true_plus_one

    if mask is None:
        return {"k_bound": None, "q_bound": None, "key_valid": None, "query_valid": None}

    def build() -> dict[str, Tensor | None]:
        lengths = mask.key_lengths
        if lengths is not None:
            k_bound, key_valid = lengths.to(torch.int32), None
        else:
            k_bound, key_valid = last_true_plus_one(mask.key_valid), mask.key_valid.contiguous()
        query_valid = mask.query_valid
        return {
            "k_bound": k_bound,
            "q_bound": None if query_valid is None else last_true_plus_one(query_valid),
            "key_valid": key_valid,
            "query_valid": None if query_valid is None else query_valid.contiguous(),
        }

    return mask.cached("triton_bounds", build)


def _usable_kernels(q: Tensor) -> tuple[ModuleType | None, list[str]]:
    """``(kernel module, [])`` if the kernel imports and runs on ``q``'s device, else ``(None, reasons)``."""
    reasons = []
    if q.device.type != "cuda" and not (q.device.type == "cpu" and _interpreting()):
        reasons.append(
            f"triton: needs CUDA tensors, got {q.device} (CPU only under TRITON_INTERPRET=1, for tests)"
        )
    mod, why = _kernels()
    if why is not None:
        reasons.append(why)
    return (None, reasons) if reasons else (mod, reasons)


def _require_kernels() -> ModuleType:
    mod, why = _kernels()
    if mod is None:
        raise RuntimeError(why)
    return mod


class TritonBackend:
    name = "triton"

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
        mod, reasons = _usable_kernels(q)
        if mod is None:
            return reasons
        lengths = None if mask is None else mask.key_lengths
        reasons = mod.triton_unsupported_reasons(
            q,
            k,
            v,
            key_lengths=lengths,
            key_valid=None if mask is None or lengths is not None else mask.key_valid,
            query_valid=None if mask is None else mask.query_valid,
            scale=scale,
            dropout_p=dropout_p,
        )
        return [f"triton: {r}" for r in reasons]

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
        _require_kernels()
        from maskmm.kernels.attention.flash import attention_with_bounds

        # Without a generator the seed comes from torch's default CPU generator inside the kernel
        # entry point: reproducible under torch.manual_seed and never a device sync.
        seed = dropout_seed(dropout_p, generator, q.device)
        # The dispatcher has validated the call (unsupported_reasons is empty): go straight to
        # the launch with the mask's cached bounds.
        return attention_with_bounds(q, k, v, **_bounds(mask), scale=scale, dropout_p=dropout_p, seed=seed)

    def varlen_unsupported_reasons(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cu_seqlens_q: Tensor,
        cu_seqlens_k: Tensor,
        max_seqlen_q: int,
        max_seqlen_k: int,
        dropout_p: float,
        *,
        scale: float | None,
    ) -> list[str]:
        """Reasons the kernel cannot take packed ``[T, H, D]`` inputs."""
        mod, reasons = _usable_kernels(q)
        if mod is None:
            return reasons
        kwargs = {
            "cu_seqlens_q": cu_seqlens_q.to(torch.int32),
            "cu_seqlens_k": cu_seqlens_k.to(torch.int32),
            "max_seqlen_q": max_seqlen_q,
            "max_seqlen_k": max_seqlen_k,
            "scale": scale,
            "dropout_p": dropout_p,
        }
        return [f"triton: {r}" for r in mod.triton_unsupported_reasons(q, k, v, **kwargs)]

    def varlen(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cu_seqlens_q: Tensor,
        cu_seqlens_k: Tensor,
        max_seqlen_q: int,
        max_seqlen_k: int,
        *,
        dropout_p: float,
        scale: float | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        mod = _require_kernels()
        seed = dropout_seed(dropout_p, generator, q.device)
        return mod.flash_attention_varlen(
            q,
            k,
            v,
            cu_seqlens_q.to(torch.int32),
            cu_seqlens_k.to(torch.int32),
            max_seqlen_q,
            max_seqlen_k,
            scale=scale,
            dropout_p=dropout_p,
            seed=seed,
            # The dispatcher checked the values (or its caller opted out: the kernels clamp every
            # sequence into the rows of q / k, so bad offsets cannot reach outside the tensors).
            check_values=False,
        )
