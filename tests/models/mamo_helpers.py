"""Config overrides that shrink the ``tiny`` MAMO preset for fast CPU tests, and a loader for the
benchmark scripts (which are files, not modules of the package)."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

#: A very small model at 32 px (4x4 patches of 8 px): every encoder one or two layers of width 32.
SMALL_MODEL = [
    "model.image_size=32",
    "data.image_size=32",
    "model.patch_size=8",
    "model.vision_dim=32",
    "model.text_dim=32",
    "model.vision_depth=1",
    "model.text_depth=1",
    "model.fusion_depth=2",
    "model.vision_heads=2",
    "model.text_heads=2",
    "model.fusion_heads=2",
    "model.embed_dim=16",
]


@contextlib.contextmanager
def benchmark_script(name: str) -> Iterator[ModuleType]:
    """Import ``benchmarks/<name>.py`` as a module for the duration of the block."""
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
