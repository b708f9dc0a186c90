"""Correctness of maskmm's attention backends at the benchmark's real shapes (CUDA).

For every case of ``attention_gpu.build_cases`` (ViT-B with and without a ~25 % drop, padded
BERT text, text->image cross attention, merged fusion, L=1024), every dtype and backend, the
output and the gradients of q, k, v are compared with a float64 computation of the same masked
attention. The bound follows the flash-attention test convention: the backend's error against
float64 may be at most ``RATIO`` times the error of plain PyTorch attention run in the same low
precision, plus a small floor. Rows without a valid query or key must be exactly zero, with zero
gradient, and nothing may be NaN.

Usage::

    python benchmarks/attention_gpu_check.py                        # bf16 + fp16, triton + sdpa
    python benchmarks/attention_gpu_check.py --dtypes bfloat16 --backends triton --cases bert_text

Writes ``attention-check-<device-slug>.json`` into ``--out-dir`` (default ``benchmarks/results``);
exits 1 when a comparison fails.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attention_gpu import RESULTS_DIR, build_cases, device_slug, environment, make_inputs, scale_case

from maskmm.attention import AttentionMask, explain, masked_attention

RATIO = 3.0
FLOOR = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-4}


def plain_attention(q, k, v, mask: AttentionMask | None):
    """Masked softmax attention written out in the inputs' dtype (independent of maskmm's code)."""
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is None:
        return torch.softmax(s, dim=-1) @ v
    allowed = mask.key_valid[:, None, None, :].expand(s.shape)
    if mask.query_valid is not None:
        allowed = allowed & mask.query_valid[:, None, :, None]
    has_key = allowed.any(-1, keepdim=True)
    s = s.masked_fill(~allowed, float("-inf")).masked_fill(~has_key, 0.0)
    return (torch.softmax(s, dim=-1) * has_key) @ v


def _with_grads(fn, tensors, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, leaves, grad_out.to(out.dtype))
    return [out.detach(), *(g.detach() for g in grads)]


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def check(case, backend: str, dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
    q, k, v, mask = make_inputs(case, device=device, dtype=dtype, seed=1)
    row = {
        "case": case.name,
        "backend": backend,
        "dtype": str(dtype).replace("torch.", ""),
        "shape": case.shape(),
    }
    reasons = explain(q, k, v, mask)[backend]
    if reasons:
        return {**row, "skipped": "; ".join(reasons)}
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(2)).to(device)
    got = _with_grads(lambda a, b, c: masked_attention(a, b, c, mask, backend=backend), [q, k, v], grad_out)
    low = _with_grads(lambda a, b, c: plain_attention(a, b, c, mask), [q, k, v], grad_out)
    ref = _with_grads(
        lambda a, b, c: plain_attention(a, b, c, mask), [t.double() for t in (q, k, v)], grad_out.double()
    )
    names = ("out", "dq", "dk", "dv")
    errors = {n: _err(g, r) for n, g, r in zip(names, got, ref)}
    torch_errors = {n: _err(lo, r) for n, lo, r in zip(names, low, ref)}
    bounds = {n: RATIO * torch_errors[n] + FLOOR[dtype] for n in names}
    finite = all(bool(torch.isfinite(g).all()) for g in got)
    zero_rows = True
    if mask is not None:
        dead = ~mask.row_valid(q.shape[2]).expand(q.shape[0], q.shape[1], q.shape[2], 1)
        zero_rows = bool((got[0].masked_select(dead) == 0).all()) and bool(
            (got[1].masked_select(dead) == 0).all()
        )
    ok = finite and zero_rows and all(errors[n] <= bounds[n] for n in names)
    return {
        **row,
        "errors": errors,
        "torch_errors": torch_errors,
        "bounds": bounds,
        "finite": finite,
        "zero_rows": zero_rows,
        "ok": ok,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--backends", nargs="*", default=["triton", "sdpa"])
    parser.add_argument("--dtypes", nargs="*", default=["bfloat16", "float16"])
    parser.add_argument("--out-dir", default=str(RESULTS_DIR))
    parser.add_argument("--allow-cpu", action="store_true", help="CPU smoke run at small shapes")
    parser.add_argument("--time-budget", type=float, default=None, help="seconds; later checks are skipped")
    args = parser.parse_args(argv)
    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif args.allow_cpu:
        device = torch.device("cpu")
    else:
        print("no CUDA device (pass --allow-cpu for a CPU smoke run)", file=sys.stderr)
        return 2
    cases = [c for c in build_cases() if not args.cases or c.name in args.cases]
    if device.type != "cuda":
        cases = [scale_case(c, max_len=24) for c in cases]
    deadline = None if args.time_budget is None else time.monotonic() + args.time_budget
    rows = []
    for dtype in (getattr(torch, d) for d in args.dtypes):
        for case in cases:
            for backend in args.backends:
                if deadline is not None and time.monotonic() > deadline:
                    rows.append(
                        {"case": case.name, "backend": backend, "dtype": str(dtype), "skipped": "time"}
                    )
                    continue
                try:
                    row = check(case, backend, dtype, device)
                except Exception as exc:  # report and go on (a CUDA error will fail the rest too)
                    row = {
                        "case": case.name,
                        "backend": backend,
                        "dtype": str(dtype),
                        "ok": False,
                        "error": f"{type(exc).__name__}: {exc}"[:400],
                    }
                rows.append(row)
                status = "skip" if "skipped" in row else ("ok" if row["ok"] else "FAIL")
                detail = (
                    row.get("skipped")
                    or row.get("error")
                    or {n: f"{e:.2e}/{row['bounds'][n]:.2e}" for n, e in row["errors"].items()}
                )
                print(f"{status:4s} {row['dtype']:9s} {case.name:14s} {backend:8s} {detail}", flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    env = environment(device)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"attention-check-{device_slug(str(env.get('device_name', 'unknown')))}.json"
    path.write_text(json.dumps({"environment": env, "ratio": RATIO, "results": rows}, indent=2) + "\n")
    failed = [r for r in rows if r.get("ok") is False]
    print(f"wrote {path}: {len(rows) - len(failed)} ok or skipped, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
