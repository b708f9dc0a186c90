"""``triton`` backend: maskmm's fused Triton kernel (``maskmm.kernels.attention``).

CUDA tensors only; on CPU it runs solely under the Triton interpreter (``TRITON_INTERPRET=1``
set before Triton is first imported), which is for tests at tiny shapes. The kernel module
is imported lazily, on the first call that needs it.

Masks: keys known to be a prefix (masks built from lengths) are passed as ``key_lengths``,
otherwise ``key_valid`` is passed as is (the kernel bounds its loop per sample itself);
``query_valid`` is passed through. Packed inputs use ``flash_attention_varlen`` directly.

The dispatch path is traceable by ``torch.compile`` (the kernel's launchers are registered
custom operators), so compiled models keep the fused kernel without graph breaks.

Dropout happens in-kernel, seeded by an int drawn from ``generator`` (or the default
generator); see :func:`~maskmm.attention.backends.base.seed_from_generator` for its cost.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .base import seed_from_generator

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


def _kernels() -> tuple[ModuleType | None, str | None]:
    """``(maskmm.kernels.attention, None)`` or ``(None, reason)``."""
    if importlib.util.find_spec("triton") is None:
        return None, "triton: the triton package is not installed"
    try:
        import maskmm.kernels.attention as mod
    except Exception as exc:  # a broken kernel build must not break the other backends
        return None, f"triton: importing maskmm.kernels.attention failed ({type(exc).__name__}: {exc})"
    missing = [n for n in _KERNEL_NAMES if not hasattr(mod, n)]
    if missing:
        return None, f"triton: maskmm.kernels.attention does not provide {', '.join(missing)}"
    return mod, None


_SIGNATURES: dict[str, frozenset[str] | None] = {}  # filled once per kernel entry point


def _accepted_kwargs(fn: Any) -> frozenset[str] | None:
    """Keyword names ``fn`` accepts (``None`` = any, it takes ``**kwargs``); cached by name."""
    key = f"{fn.__module__}.{fn.__qualname__}"
    if key not in _SIGNATURES:
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            params = []
        if not params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            _SIGNATURES[key] = None
        else:
            _SIGNATURES[key] = frozenset(p.name for p in params)
    return _SIGNATURES[key]


def _no_value_check(fn: Any) -> dict[str, bool]:
    """``check_values=False`` where the kernel accepts it: lengths from :class:`AttentionMask`
    are already clamped, and the check would cost a host sync."""
    accepted = _accepted_kwargs(fn)
    return {"check_values": False} if accepted is None or "check_values" in accepted else {}


def _mask_kwargs(mask: AttentionMask | None) -> dict[str, Tensor | None]:
    if mask is None:
        return {"key_lengths": None, "key_valid": None, "query_valid": None}
    lengths = mask.key_lengths
    return {
        "key_lengths": lengths,
        "key_valid": None if lengths is not None else mask.key_valid,
        "query_valid": mask.query_valid,
    }


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
        reasons = []
        if q.device.type != "cuda" and not (q.device.type == "cpu" and _interpreting()):
            reasons.append(
                f"triton: needs CUDA tensors, got {q.device} (CPU only under TRITON_INTERPRET=1, for tests)"
            )
        mod, why = _kernels()
        if why is not None:
            reasons.append(why)
        if reasons or mod is None:
            return reasons
        kwargs: dict[str, Any] = {**_mask_kwargs(mask), "scale": scale, "dropout_p": dropout_p}
        accepted = _accepted_kwargs(mod.triton_unsupported_reasons)
        if accepted is not None:
            kwargs = {key: val for key, val in kwargs.items() if key in accepted}
        return [f"triton: {r}" for r in mod.triton_unsupported_reasons(q, k, v, **kwargs)]

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
        mod, why = _kernels()
        if mod is None:
            raise RuntimeError(why)
        seed = seed_from_generator(generator, q.device) if dropout_p > 0.0 else None
        extra = _no_value_check(mod.flash_attention)
        return mod.flash_attention(
            q, k, v, **_mask_kwargs(mask), scale=scale, dropout_p=dropout_p, seed=seed, **extra
        )

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
        reasons = []
        if q.device.type != "cuda" and not (q.device.type == "cpu" and _interpreting()):
            reasons.append(
                f"triton: needs CUDA tensors, got {q.device} (CPU only under TRITON_INTERPRET=1, for tests)"
            )
        mod, why = _kernels()
        if why is not None:
            reasons.append(why)
        if reasons or mod is None:
            return reasons
        kwargs = {
            "cu_seqlens_q": cu_seqlens_q.to(torch.int32),
            "cu_seqlens_k": cu_seqlens_k.to(torch.int32),
            "max_seqlen_q": max_seqlen_q,
            "max_seqlen_k": max_seqlen_k,
            "scale": scale,
            "dropout_p": dropout_p,
        }
        accepted = _accepted_kwargs(mod.triton_unsupported_reasons)
        if accepted is not None and "cu_seqlens_q" not in accepted:  # no packed checks: use padded views
            as_padded = [t[None].transpose(1, 2) for t in (q, k, v)]
            return self.unsupported_reasons(*as_padded, None, dropout_p, scale=scale, generator=None)
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
        mod, why = _kernels()
        if mod is None:
            raise RuntimeError(why)
        seed = seed_from_generator(generator, q.device) if dropout_p > 0.0 else None
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
            **_no_value_check(mod.flash_attention_varlen),
        )
