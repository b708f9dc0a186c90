"""Test-wide set-up.

Triton kernels run on the CPU through Triton's interpreter. ``TRITON_INTERPRET``
must be set before Triton is first imported, so it is decided here, before any
test module imports maskmm's kernels: without a CUDA device the interpreter is
used; with one, kernels are compiled for it (set ``TRITON_INTERPRET=1``
yourself to force the interpreter on a GPU machine).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# helpers shared by several test folders (e.g. ``spawn_helpers``) live in tests/ itself: make them
# importable as top-level modules under every pytest import mode
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Every test starts from the same global seed (tests that need generators build their own)."""
    torch.manual_seed(0)
