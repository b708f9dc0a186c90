"""Name handling for pairing student and teacher tensors.

Wrappers add name prefixes: ``DistributedDataParallel`` / ``DataParallel`` add
``module.`` and ``torch.compile`` adds ``_orig_mod.`` (at the top, or in the
middle when only a submodule was compiled). Student and teacher tensors are
paired by their *canonical* name, with those wrapper segments removed, so a
teacher built from the bare model still pairs with a wrapped student.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = ["canonical_name", "matches_any", "named_slots", "resolve_submodule", "unwrap_module"]

_WRAPPER_KEYS = ("module", "_orig_mod")


def canonical_name(name: str) -> str:
    """Drop every ``_orig_mod`` segment and any leading ``module`` segments of a dotted name."""
    parts = [p for p in name.split(".") if p != "_orig_mod"]
    while len(parts) > 1 and parts[0] == "module":
        parts = parts[1:]
    return ".".join(parts)


def _is_thin_wrapper(module: nn.Module) -> bool:
    """A module whose only content is one child called ``module`` or ``_orig_mod``."""
    if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return True
    children = module._modules
    return (
        len(children) == 1
        and next(iter(children)) in _WRAPPER_KEYS
        and next(iter(children.values())) is not None
        and not any(p is not None for p in module._parameters.values())
        and not any(b is not None for b in module._buffers.values())
    )


def unwrap_module(module: nn.Module) -> nn.Module:
    """Strip DDP / DataParallel / ``torch.compile`` (and look-alike) wrappers."""
    while _is_thin_wrapper(module):
        module = next(iter(module._modules.values()))
    return module


def resolve_submodule(root: nn.Module, name: str) -> nn.Module:
    """Find the submodule ``name`` (canonical, dotted) of ``root``, looking through wrappers."""
    current = unwrap_module(root)
    if name == "":
        return current
    for part in name.split("."):
        child = current._modules.get(part)
        if child is None:
            raise ValueError(
                f"include names a submodule {name!r} that the student does not have (no {part!r})"
            )
        current = unwrap_module(child)
    return current


def named_slots(module: nn.Module, kind: str) -> list[tuple[str, nn.Module, str]]:
    """``(canonical name, owner module, key)`` of every parameter or buffer, aliases included.

    ``kind`` is ``"param"`` or ``"buffer"``. Shared tensors appear once per name
    under which they are reachable.
    """
    out: list[tuple[str, nn.Module, str]] = []
    for prefix, owner in module.named_modules(remove_duplicate=False):
        store = owner._parameters if kind == "param" else owner._buffers
        for key, tensor in store.items():
            if tensor is None:
                continue
            full = f"{prefix}.{key}" if prefix else key
            out.append((canonical_name(full), owner, key))
    return out


def get_slot(owner: nn.Module, key: str) -> torch.Tensor:
    """The tensor registered under ``key`` in ``owner`` (parameter or buffer)."""
    tensor = owner._parameters.get(key)
    if tensor is None:
        tensor = owner._buffers[key]
    return tensor


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    """Whether a canonical name matches one of ``patterns``.

    A pattern matches a name equal to it, a name below it (``"vision.blocks"``
    matches ``"vision.blocks.0.attn.qkv.weight"``), or, when it holds a glob
    character (``* ? [``), any name it matches with :func:`fnmatch.fnmatchcase`.
    """
    for pattern in patterns:
        if name == pattern or name.startswith(pattern + "."):
            return True
        if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def check_names(name: str, value: Sequence[str] | str | None) -> tuple[str, ...] | None:
    """Validate a sequence of dotted names (``None`` passes through); return canonical names."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list or tuple of str, got {type(value).__name__}")
    out = []
    for item in value:
        if not isinstance(item, str) or not item:
            raise TypeError(f"{name} must contain non-empty str entries, got {item!r}")
        out.append(canonical_name(item))
    return tuple(out)
