"""Checkpoints: atomic save, load, discovery, and RNG state capture for exact resume."""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "capture_rng_state",
    "latest_checkpoint",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` with ``torch.save`` atomically.

    The file is first written to a temporary file in the same folder, flushed and
    fsynced, then moved over ``path`` with ``os.replace``: a crash never leaves a
    half-written checkpoint under ``path``.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Uses ``weights_only=True`` (tensors, plain containers and numbers only), so loading
    never executes code from the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist")
    return torch.load(path, map_location=map_location, weights_only=True)


_STEP_RE = re.compile(r"step_(\d+)\.pt$")


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """Newest ``step_<N>.pt`` in ``folder`` (highest N), or ``None``."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_RE.search(p.name))]
    return max(found)[1] if found else None


def capture_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """RNG states of Python, NumPy (if installed), torch CPU, CUDA (if available) and given generators.

    Python's and NumPy's states are stored as tensors/lists of ints so that the result loads
    with ``weights_only=True``.
    """
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "python": {
            "version": py_version,
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
        "torch": torch.get_rng_state(),
    }
    try:
        import numpy as np

        name, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {
            "name": name,
            "keys": torch.from_numpy(keys.astype("int64")),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        }
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generators:
        state["generators"] = {k: g.get_state() for k, g in generators.items()}
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of :func:`capture_rng_state` (missing entries are left untouched)."""
    if "python" in state:
        py = state["python"]
        random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "numpy" in state:
        import numpy as np

        n = state["numpy"]
        np.random.set_state(
            (n["name"], n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["cached"])
        )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if generators and "generators" in state:
        for k, g in generators.items():
            if k in state["generators"]:
                g.set_state(state["generators"][k].cpu())
