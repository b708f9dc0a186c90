"""Input validation shared by maskmm's public functions.

Every public boundary validates shapes, dtypes and devices and raises a
``ValueError`` or ``TypeError`` that names the argument, what it got and what
was expected. These helpers keep those messages uniform.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "check_bool",
    "check_choice",
    "check_class_indices",
    "check_floating",
    "check_generator",
    "check_int",
    "check_positive_float",
    "check_ratio",
    "check_same_device",
    "check_same_dtype",
    "check_tensor",
]


def _fmt_shape(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"


def check_tensor(
    name: str,
    value: object,
    *,
    ndim: int | None = None,
    shape: Sequence[int | None] | None = None,
    dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Validate ``value`` and return it.

    Args:
        name: argument name used in error messages.
        ndim: required number of dimensions.
        shape: required shape; ``None`` entries are free.
        dtype: required dtype, or a sequence of accepted dtypes.
        device: required device (compared by type and index).
    Raises:
        TypeError: ``value`` is not a tensor or has the wrong dtype.
        ValueError: wrong number of dimensions, shape or device.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if shape is not None:
        ndim = len(shape)
    if ndim is not None and value.dim() != ndim:
        expected = _fmt_shape(shape) if shape is not None else f"{ndim} dims"
        raise ValueError(f"{name} must have shape {expected}, got {list(value.shape)}")
    if shape is not None:
        for want, got in zip(shape, value.shape):
            if want is not None and want != got:
                raise ValueError(f"{name} must have shape {_fmt_shape(shape)}, got {list(value.shape)}")
    if dtype is not None:
        accepted = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
        if value.dtype not in accepted:
            names = " or ".join(str(d) for d in accepted)
            raise TypeError(f"{name} must have dtype {names}, got {value.dtype}")
    if device is not None and not _same_device(value.device, torch.device(device)):
        raise ValueError(f"{name} must be on device {device}, got {value.device}")
    return value


def check_floating(name: str, value: object, **kwargs) -> torch.Tensor:
    """Like :func:`check_tensor`, and require a floating-point dtype."""
    t = check_tensor(name, value, **kwargs)
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    return t


def check_ratio(name: str, value: object, *, allow_one: bool = False) -> float:
    """Validate a ratio in ``[0, 1)`` (or ``[0, 1]`` with ``allow_one``) and return it as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    v = float(value)
    hi_ok = v <= 1.0 if allow_one else v < 1.0
    if not (v >= 0.0 and hi_ok):
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(f"{name} must lie in {interval}, got {value}")
    return v


def check_int(name: str, value: object, *, minimum: int = 0) -> int:
    """Validate an ``int`` (not ``bool``) ``>= minimum`` and return it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_positive_float(name: str, value: object) -> float:
    """Validate a finite number ``> 0`` (not ``bool``) and return it as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive float, got {type(value).__name__}")
    v = float(value)
    if not (v > 0.0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a positive finite float, got {value}")
    return v


def check_bool(name: str, value: object) -> bool:
    """Validate a ``bool`` flag and return it."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_class_indices(name: str, value: torch.Tensor, num_classes: int, *, allowed: str = "") -> None:
    """Require every entry of the integer tensor ``value`` to lie in ``[0, num_classes)``.

    Costs one host read (the minimum and maximum together; a synchronisation on CUDA), none for an
    empty tensor, and is skipped while ``torch.compile`` traces (the read would break the graph).
    ``allowed`` is appended to the message (e.g. the ignore index the caller removed before).

    Raises:
        ValueError: naming ``name``, the range and the offending minimum and/or maximum.
    """
    if value.numel() == 0 or torch.compiler.is_compiling():
        return
    lo, hi = (int(x) for x in torch.stack((value.min(), value.max())).tolist())
    if lo >= 0 and hi < num_classes:
        return
    got = [f"minimum {lo}"] if lo < 0 else []
    got += [f"maximum {hi}"] if hi >= num_classes else []
    raise ValueError(f"{name} must lie in [0, {num_classes}){allowed}, got {' and '.join(got)}")


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Validate that ``value`` is one of the strings ``choices`` and return it."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    return a.index is None or b.index is None or a.index == b.index


def check_same_device(**tensors: torch.Tensor | None) -> torch.device | None:
    """Require all given (non-``None``) tensors to share one device; return it."""
    first_name, first_dev = None, None
    for name, t in tensors.items():
        if t is None:
            continue
        if first_dev is None:
            first_name, first_dev = name, t.device
        elif not _same_device(t.device, first_dev):
            raise ValueError(
                f"{name} is on {t.device} but {first_name} is on {first_dev}; they must share a device"
            )
    return first_dev


def check_same_dtype(**tensors: torch.Tensor | None) -> torch.dtype | None:
    """Require all given (non-``None``) tensors to share one dtype; return it."""
    first_name, first_dtype = None, None
    for name, t in tensors.items():
        if t is None:
            continue
        if first_dtype is None:
            first_name, first_dtype = name, t.dtype
        elif t.dtype != first_dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {first_name} has {first_dtype}; they must match")
    return first_dtype


def check_generator(name: str, generator: torch.Generator | None, device: torch.device) -> None:
    """Require ``generator`` (if given) to be a ``torch.Generator`` on ``device``'s type."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != torch.device(device).type:
        raise ValueError(f"{name} is a {generator.device.type} generator but the tensors are on {device}")
