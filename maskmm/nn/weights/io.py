"""Reading checkpoints from local files or folders, and applying mapped weights with a report.

Nothing here downloads: a path that does not exist raises ``FileNotFoundError``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["LoadReport", "apply_weights", "load_state_dict", "read_source"]

_SINGLE_FILES = ("model.safetensors", "pytorch_model.bin", "model.bin", "model.pt", "model.pth")
_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_CONTAINER_KEYS = ("state_dict", "model", "module", "model_state_dict")


@dataclass
class LoadReport:
    """What a weight import did.

    - ``missing_keys``: target state-dict keys left as they were (not found in the source).
    - ``unexpected_keys``: source keys that were not used.
    - ``resampled_keys``: target keys whose value was resampled (e.g. position tables).
    """

    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    resampled_keys: list[str] = field(default_factory=list)

    def extend(self, other: LoadReport, prefix: str = "") -> None:
        """Add ``other``'s missing/resampled keys (prefixed with ``prefix``)."""
        self.missing_keys += [prefix + k for k in other.missing_keys]
        self.resampled_keys += [prefix + k for k in other.resampled_keys]

    @property
    def complete(self) -> bool:
        """Every target key was loaded."""
        return not self.missing_keys


def _read_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"reading {path} needs the 'safetensors' package (pip install safetensors)"
            ) from err
        return dict(load_file(str(path), device="cpu"))
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    for key in _CONTAINER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, Tensor) for v in inner.values()):
            obj = inner
            break
    return {k: v for k, v in obj.items() if isinstance(v, Tensor)}


def load_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from a local file or folder, on the CPU.

    Files: ``*.safetensors`` (needs ``safetensors``), or anything ``torch.load`` reads with
    ``weights_only=True`` (``.bin``, ``.pt``, ``.pth``, ``.ckpt``); a checkpoint wrapping its
    weights under ``state_dict`` / ``model`` / ``module`` is unwrapped. Folders: the Hugging Face
    layout (``model.safetensors``, ``pytorch_model.bin`` or a sharded ``*.index.json``), or a
    folder holding exactly one weight file. ``safetensors`` files are preferred when the
    package is installed.
    """
    if not isinstance(path, str | Path):
        raise TypeError(f"path must be a str or Path, got {type(path).__name__}")
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"path {str(path)!r} does not exist locally (weights are never downloaded)")
    if p.is_file():
        if p.name.endswith(".index.json"):
            return _read_index(p)
        return _read_file(p)
    try:
        import safetensors  # noqa: F401

        have_st = True
    except ImportError:  # pragma: no cover - depends on the environment
        have_st = False
    order = (
        [n for n in _INDEX_FILES[:1] + _SINGLE_FILES[:1] if have_st]
        + list(_INDEX_FILES[1:])
        + list(_SINGLE_FILES[1:])
    )
    for name in order:
        if (p / name).is_file():
            return _read_index(p / name) if name.endswith(".json") else _read_file(p / name)
    suffixes = (
        (".safetensors", ".bin", ".pt", ".pth", ".ckpt") if have_st else (".bin", ".pt", ".pth", ".ckpt")
    )
    found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in suffixes)
    if len(found) == 1:
        return _read_file(found[0])
    raise FileNotFoundError(
        f"path {str(path)!r} is a folder without a recognised weight file "
        f"(looked for {', '.join(order)} or exactly one *{'/*'.join(suffixes)} file; found {len(found)})"
    )


def _read_index(index: Path) -> dict[str, Tensor]:
    weight_map = json.loads(index.read_text()).get("weight_map")
    if not isinstance(weight_map, Mapping):
        raise ValueError(f"{index} has no 'weight_map'")
    out: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        out.update(_read_file(index.parent / shard))
    return out


def read_source(source: str | Path | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A state dict given directly (``Mapping``) or read with :func:`load_state_dict`."""
    if isinstance(source, Mapping):
        return {k: v for k, v in source.items() if isinstance(v, Tensor)}
    return load_state_dict(source)


def apply_weights(
    module: nn.Module,
    mapped: Mapping[str, Tensor],
    *,
    resampled: Iterable[str] = (),
    ignore_missing: Iterable[str] = (),
) -> LoadReport:
    """Copy ``mapped`` (keys in ``module.state_dict()`` naming) into ``module``.

    Every value must match its target's shape exactly (``ValueError`` naming the key otherwise);
    values are cast to the target's dtype. Returns the report of target keys not given
    (``ignore_missing`` excluded). ``unexpected_keys`` is left for the caller, which knows the
    source naming.
    """
    target = module.state_dict(keep_vars=True)
    for key, value in mapped.items():
        if key not in target:
            raise KeyError(f"internal mapping produced {key!r}, which {type(module).__name__} does not have")
        if tuple(value.shape) != tuple(target[key].shape):
            raise ValueError(
                f"weight {key!r} of {type(module).__name__} has shape {list(target[key].shape)}, "
                f"but the checkpoint gives {list(value.shape)}"
            )
    with torch.no_grad():
        for key, value in mapped.items():
            dst = target[key]
            dst.copy_(value.to(device=dst.device, dtype=dst.dtype))
    skip = set(ignore_missing)
    missing = [k for k in target if k not in mapped and k not in skip]
    return LoadReport(missing_keys=missing, resampled_keys=list(resampled))
