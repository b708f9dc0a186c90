"""Mixed precision selection: bf16 autocast on CUDA by default, fp32 on CPU."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast", "resolve_amp_dtype"]


def resolve_amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """``"auto"`` -> bf16 on CUDA devices that support it, else ``None`` (fp32).

    ``"bf16"``/``"fp16"`` force that dtype; ``"none"`` disables autocast.
    """
    if mode not in ("auto", "bf16", "fp16", "none"):
        raise ValueError(f"amp must be one of auto/bf16/fp16/none, got {mode!r}")
    if mode == "none":
        return None
    if mode == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    return torch.bfloat16 if mode == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``device`` with ``dtype``, or a null context when ``dtype`` is ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
