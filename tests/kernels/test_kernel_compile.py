"""The attention kernels compile for Hopper with Triton's GPU compiler (no GPU needed).

The CPU interpreter accepts programs the compiler rejects and says nothing about registers,
shared memory or tensor-core use; ``benchmarks/kernel_compile_check.py --quick`` compiles the
sm90 head-dim-64 configurations (fp16/bf16, with and without masks and dropout) and fails on a
compile error, register spills, shared memory over the limit, no ``wgmma`` or no pipelining.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "kernel_compile_check.py"


def _missing() -> str | None:
    try:
        import triton
    except ImportError:
        return "triton is not installed"
    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    for tool in ("ptxas", "cuobjdump"):
        if not (bin_dir / tool).exists():
            return f"triton's NVIDIA backend has no bundled {tool}"
    if not SCRIPT.exists():
        return f"{SCRIPT} is not part of this checkout"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_kernels_compile_for_sm90_without_spills():
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, env=env, timeout=600
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("ok", "FAIL"))]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(lines) == 12 and all(line.startswith("ok") for line in lines)
    assert all("wgmma=True" in line for line in lines)
