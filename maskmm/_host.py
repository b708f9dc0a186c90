"""Tensors to Python values with as few host transfers as possible (logging, evaluation results)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["to_python"]


def _is_scalar(v: Any) -> bool:
    return isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_complex()


def _scalars_to_python(tensors: list[torch.Tensor]) -> list[int | float | bool]:
    """One-element tensors -> Python numbers with one host transfer per device.

    Values travel as float64 and get their type back from the tensor's dtype (bool, int,
    float); integers beyond 2**53 therefore lose precision.
    """
    out: list[Any] = [None] * len(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    for idx in by_device.values():
        stacked = torch.stack([tensors[i].detach().reshape(()).to(torch.float64) for i in idx])
        for i, x in zip(idx, stacked.cpu().tolist()):
            dtype = tensors[i].dtype
            out[i] = bool(x) if dtype == torch.bool else x if dtype.is_floating_point else int(x)
    return out


def _convert_all(values: list[Any]) -> list[Any]:
    out = [to_python(v) if not _is_scalar(v) else None for v in values]
    idx = [i for i, v in enumerate(values) if _is_scalar(v)]
    for i, x in zip(idx, _scalars_to_python([values[i] for i in idx])):
        out[i] = x
    return out


def to_python(value: Any) -> Any:
    """Tensors -> Python numbers/lists, recursing into dicts, lists and tuples.

    This is where the host sync happens: the one-element tensors directly inside one dict
    (or list) are stacked and copied to the host together, one sync per device per call;
    larger tensors become nested lists with one sync each.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach()
        return value.item() if value.numel() == 1 else value.cpu().tolist()
    if isinstance(value, dict):
        return dict(zip(value.keys(), _convert_all(list(value.values()))))
    if isinstance(value, (list, tuple)):
        return _convert_all(list(value))
    return value
