"""pytest-benchmark suite for maskmm.attention: every backend x every case, forward and forward+backward.

On CUDA the cases run at their real shapes (see ``attention_gpu.build_cases``); without CUDA
they are scaled down automatically (B<=2, H<=2, L<=48) so the suite finishes on a laptop CPU.
Combinations a backend cannot run are skipped with its reasons (``maskmm.attention.explain``).

    pytest benchmarks/test_bench_attention.py --benchmark-only
    pytest benchmarks/test_bench_attention.py -k "cross_t2i and triton" --benchmark-only
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attention_gpu import attention_flops, build_cases, make_inputs, scale_case

from maskmm.attention import explain, masked_attention

ON_CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_CUDA else "cpu")
DTYPE = torch.float16 if ON_CUDA else torch.float32
CASES = build_cases() if ON_CUDA else [scale_case(c) for c in build_cases()]
BACKENDS = ["triton", "flex", "sdpa", "xformers", "reference"]


def _sync() -> None:
    if ON_CUDA:
        torch.cuda.synchronize()


@pytest.mark.parametrize("direction", ["fwd", "fwd_bwd"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_attention(benchmark, case, backend, direction):
    if backend == "triton" and not ON_CUDA:
        pytest.skip("the Triton interpreter on CPU is far too slow to benchmark")
    q, k, v, mask = make_inputs(case, device=DEVICE, dtype=DTYPE, requires_grad=direction == "fwd_bwd")
    reasons = explain(q, k, v, mask)[backend]
    if reasons:
        pytest.skip("; ".join(reasons))
    grad_out = torch.randn_like(q)

    def fwd():
        with torch.no_grad():
            out = masked_attention(q, k, v, mask, backend=backend)
        _sync()
        return out

    def fwd_bwd():
        out = masked_attention(q, k, v, mask, backend=backend)
        grads = torch.autograd.grad(out, (q, k, v), grad_out)
        _sync()
        return grads

    fn = fwd if direction == "fwd" else fwd_bwd
    fn()  # warm-up / compilation outside the timed rounds
    benchmark.extra_info.update(
        case=case.name,
        shape=case.shape(),
        backend=backend,
        direction=direction,
        dense_flops=attention_flops(case, direction),
        useful_flops=attention_flops(case, direction, useful=True),
    )
    result = benchmark(fn)
    assert result is not None
