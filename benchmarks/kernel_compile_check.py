"""Compile the attention kernels for sm90 / sm80 ahead of time, without a GPU, and check the result.

Triton's CPU interpreter accepts programs that the GPU compiler rejects, and it says nothing
about registers, shared memory or tensor-core use. This script compiles every configuration of
the launch table (``kernels/attention/_config.py``) for Hopper (sm90) and A100 (sm80) with
Triton's own compiler and ``ptxas`` (bundled with Triton; no CUDA device or driver needed) and
reads the machine code's resource usage. A configuration fails when it does not compile, spills
registers to local memory, needs more shared memory than the target has, or, on sm90 for
fp16/bf16, does not use ``wgmma`` (Hopper's tensor-core instruction) or is not software-pipelined
(no ``cp.async`` in the loop).

Integer arguments are given the 16-divisibility hint that Triton's launcher gives strides that
are multiples of 16 at run time (head dims 16/32/64/128 in the usual layouts): without it loads
are not vectorised and the loops are not pipelined.

Usage::

    python benchmarks/kernel_compile_check.py            # the whole table, both targets
    python benchmarks/kernel_compile_check.py --quick    # sm90, d=64, fp16/bf16 (CI smoke)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

# Compiling needs the real @triton.jit functions, not the interpreter's stand-ins.
if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    os.environ["TRITON_INTERPRET"] = "0"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import triton
from maskmm.kernels.attention._config import _TABLE
from maskmm.kernels.attention._triton_bwd import attn_bwd_dkdv_kernel, attn_bwd_dq_kernel
from maskmm.kernels.attention._triton_fwd import attn_fwd_kernel
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

KERNELS = {"fwd": attn_fwd_kernel, "bwd_kv": attn_bwd_dkdv_kernel, "bwd_q": attn_bwd_dq_kernel}
SHARED_LIMIT = {90: 232448, 80: 166912}  # bytes per block (opt-in maximum)
_TYPES = {
    **dict.fromkeys(("Q", "K", "V", "O", "DO", "DK", "DV", "DQ"), "data"),
    **dict.fromkeys(("LSE", "DELTA"), "*fp32"),
    **dict.fromkeys(("CU_Q", "CU_K", "Q_BOUND", "K_BOUND"), "*i32"),
    **dict.fromkeys(("QVALID", "KVALID"), "*u8"),
    **dict.fromkeys(("qk_scale", "sm_scale", "dropout_p"), "fp32"),
    "seed_key": "i64",
}


def compile_kernel(fn, dtype: str, constexprs: dict, num_warps: int, num_stages: int, cc: int):
    signature, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        kind = "constexpr" if name in constexprs else _TYPES.get(name, "i32")
        signature[name] = "*" + dtype if kind == "data" else kind
        if signature[name].startswith("*") or name.startswith("stride_"):
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn, signature, constexprs=constexprs, attrs=attrs)
    options = {"num_warps": num_warps, "num_stages": num_stages}
    return triton.compile(src, target=GPUTarget("cuda", cc, 32), options=options)


def resources(kernel) -> dict:
    """Registers, local (spill) bytes and shared memory of a compiled kernel, read with cuobjdump."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(kernel.asm["cubin"])
    try:
        text = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    m = re.search(r"REG:(\d+).*?SHARED:(\d+).*?LOCAL:(\d+)", text, re.S)
    if m is None:
        raise RuntimeError(f"cannot read cuobjdump output: {text[:200]}")
    ptx = kernel.asm["ptx"]
    return {
        "regs": int(m.group(1)),
        "local": int(m.group(3)),
        "shared": int(m.group(2)) + kernel.metadata.shared,
        "wgmma": "wgmma.mma_async" in ptx,
        "cp_async": ptx.count("cp.async.cg") + ptx.count("cp.async.ca"),
    }


def configs(quick: bool):
    archs = (90,) if quick else (90, 80)
    dims = (64,) if quick else (32, 64, 128)
    dtypes = ("fp16", "bf16") if quick else ("fp16", "bf16", "fp32")
    for cc in archs:
        for pass_name, fn in KERNELS.items():
            for d in dims:
                for dtype in dtypes:
                    bm, bn, warps, stages = _TABLE[(pass_name, f"sm{cc}")][d]
                    if dtype == "fp32":  # as pick_config
                        bm, bn, stages = max(16, bm // 2), max(16, bn // 2), min(stages, 2)
                    for masked in (False, True):
                        c = {
                            "HEAD_DIM": d,
                            "BLOCK_D": d,
                            "BLOCK_M": bm,
                            "BLOCK_N": bn,
                            "IS_VARLEN": False,
                            "HAS_KMASK": masked,
                            "DROPOUT": masked,
                            "IEEE": dtype == "fp32",
                            "UPCAST": False,
                        }
                        if pass_name == "fwd":
                            c["HAS_QMASK"] = masked
                        yield cc, pass_name, fn, d, dtype, masked, c, warps, stages


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sm90, head dim 64, fp16/bf16 only")
    args = parser.parse_args(argv)
    print(f"triton {triton.__version__}")
    failures = 0
    for cc, pass_name, fn, d, dtype, masked, c, warps, stages in configs(args.quick):
        label = (
            f"sm{cc} {pass_name:6s} d={d:<3d} {dtype} masks+dropout={int(masked)} "
            f"tile={c['BLOCK_M']}x{c['BLOCK_N']} warps={warps} stages={stages}"
        )
        t0 = time.perf_counter()
        try:
            r = resources(compile_kernel(fn, dtype, c, warps, stages, cc))
        except Exception as exc:
            print(f"FAIL {label}: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
            failures += 1
            continue
        problems = []
        if r["local"]:
            problems.append(f"{r['local']} bytes of register spills")
        if r["shared"] > SHARED_LIMIT[cc]:
            problems.append(f"shared memory {r['shared']} > {SHARED_LIMIT[cc]}")
        if cc == 90 and dtype != "fp32" and not r["wgmma"]:
            problems.append("no wgmma")
        if not r["cp_async"]:
            problems.append("loop not pipelined (no cp.async)")
        failures += bool(problems)
        status = "FAIL" if problems else "ok  "
        print(
            f"{status} {label}: regs={r['regs']} shared={r['shared']} wgmma={r['wgmma']} "
            f"cp.async={r['cp_async']} ({time.perf_counter() - t0:.1f}s) {'; '.join(problems)}",
            flush=True,
        )
    print(f"{failures} failing configuration(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
