"""The ``triton`` backend of masked_attention, run through the Triton interpreter on CPU (tiny shapes)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from maskmm.attention import AttentionMask, masked_attention, masked_attention_varlen

_NAMES = ("flash_attention", "flash_attention_varlen", "attention_dropout_mask", "triton_unsupported_reasons")


def _kernel_missing() -> str | None:
    try:
        import maskmm.kernels.attention as mod
    except Exception as exc:
        return f"maskmm.kernels.attention does not import: {exc}"
    missing = [n for n in _NAMES if not hasattr(mod, n)]
    return f"the Triton kernel does not provide {', '.join(missing)} yet" if missing else None


_why = _kernel_missing()
if _why is None and not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
    _why = "no CUDA device and TRITON_INTERPRET is not set"
pytestmark = pytest.mark.skipif(_why is not None, reason=_why or "")
# Compiled kernels on a CUDA machine, the interpreter on CPU.
DEVICE = (
    "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0") else "cpu"
)


def plain_attention(q, k, v, key_valid=None, query_valid=None, keep=None, p=0.0):
    q, k, v = q.double(), k.double(), v.double()
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    allowed = torch.ones(s.shape, dtype=torch.bool, device=s.device)
    if key_valid is not None:
        allowed = allowed & key_valid[:, None, None, :]
    if query_valid is not None:
        allowed = allowed & query_valid[:, None, :, None]
    m = torch.where(allowed, s, torch.full_like(s, -1e300)).amax(-1, keepdim=True)
    e = torch.where(allowed, torch.exp(torch.where(allowed, s - m, torch.zeros_like(s))), torch.zeros_like(s))
    probs = e / e.sum(-1, keepdim=True).clamp_min(1e-300)
    if keep is not None:
        probs = probs * keep / (1 - p)
    return probs @ v


def _case(seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 2, 5, 16, generator=g)
    k = torch.randn(2, 2, 7, 16, generator=g)
    v = torch.randn(2, 2, 7, 16, generator=g)
    key_valid = torch.tensor([[1, 0, 1, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    query_valid = torch.tensor([[1, 1, 0, 1, 1], [1, 0, 1, 1, 1]], dtype=torch.bool)
    return [t.to(DEVICE) for t in (q, k, v, key_valid, query_valid)]


@pytest.mark.parametrize("kind", ["boolean", "lengths"])
def test_triton_matches_float64(kind):
    q, k, v, kv, qv = _case()
    if kind == "lengths":
        mask = AttentionMask.from_key_lengths(torch.tensor([4, 0], device=DEVICE), 7, qv)
        kv = mask.key_valid
    else:
        mask = AttentionMask.from_key_valid(kv, qv)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out = masked_attention(q, k, v, mask, backend="triton")
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = plain_attention(q64, k64, v64, kv, qv)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=2e-5)
    up = torch.randn(out.shape, dtype=torch.float64).to(DEVICE)
    got = torch.autograd.grad((out.double() * up).sum(), (q, k, v))
    want = torch.autograd.grad((ref * up).sum(), (q64, k64, v64))
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, atol=1e-4, rtol=1e-4)
    assert torch.equal(got[0][1, :, 1], torch.zeros_like(got[0][1, :, 1]))


def test_triton_dropout_is_seeded_by_the_generator():
    from maskmm.kernels.attention import attention_dropout_mask

    q, k, v, kv, qv = _case()
    mask = AttentionMask.from_key_valid(kv, qv)
    p = 0.25
    run = lambda s: masked_attention(
        q, k, v, mask, dropout_p=p, backend="triton", generator=torch.Generator(DEVICE).manual_seed(s)
    )
    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # replay: the seed is the first draw of randint(0, 2**31 - 1) from the generator
    gen = torch.Generator(DEVICE).manual_seed(3)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen, device=DEVICE).item())
    keep = attention_dropout_mask(seed, 2, 2, 5, 7, p, DEVICE)
    torch.testing.assert_close(
        a.double(), plain_attention(q, k, v, kv, qv, keep=keep, p=p), atol=2e-5, rtol=2e-5
    )


def test_triton_varlen_native_equals_padded_sdpa():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(6, 2, 16, generator=g).to(DEVICE)
    k = torch.randn(7, 2, 16, generator=g).to(DEVICE)
    v = torch.randn(7, 2, 16, generator=g).to(DEVICE)
    cu_q = torch.tensor([0, 2, 6, 6], dtype=torch.int32, device=DEVICE)
    cu_k = torch.tensor([0, 3, 3, 7], dtype=torch.int32, device=DEVICE)
    out = masked_attention_varlen(q, k, v, cu_q, cu_k, 4, 4, backend="triton")
    ref = masked_attention_varlen(q, k, v, cu_q, cu_k, 4, 4, backend="sdpa")
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
    assert torch.equal(out[2:6], torch.zeros_like(out[2:6]))  # sequence 1 has no keys


# Run in a fresh interpreter: an out-of-bounds access in a Triton kernel corrupts the heap (aborting
# the process: ``free(): invalid pointer``) under the CPU interpreter and faults on CUDA.
_BAD_OFFSETS_SCRIPT = """
import torch
from maskmm.attention import masked_attention_varlen

dev = {device!r}
g = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(37, 2, 16, generator=g).to(dev).requires_grad_() for _ in range(3))


def cu(*values, dtype=torch.int32):
    return torch.tensor(values, dtype=dtype, device=dev)


try:
    masked_attention_varlen(q, k, v, cu(0, 20, 40), cu(0, 20, 37), 20, 20, backend="triton")
except ValueError as exc:
    print("raised:", exc)
unchecked = [
    (cu(0, 20, 40), cu(0, 20, 37), 20, 20),  # past the last row
    (cu(-5, 30, 10**6), cu(0, 37, 37), 40, 40),  # before the first row, far past the last
    (cu(0, 2**40, -(2**40), dtype=torch.int64), cu(0, 20, 37), 20, 20),  # wraps when cast to int32
    (cu(0, 20, 37), cu(0, 20, 37), 8, 8),  # sequences longer than max_seqlen
    (cu(0, 25, 20), cu(0, 37, 0), 30, 40),  # decreasing
]
for cu_q, cu_k, max_q, max_k in unchecked:
    out = masked_attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, backend="triton", check_values=False)
    out.sum().backward()
    assert out.shape == q.shape and torch.isfinite(out).all()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
print("unchecked calls finished")
"""


def test_triton_varlen_offsets_past_the_tensors_raise_or_stay_inside():
    """Checked, ``cu_seqlens_q[-1]`` past the rows of q raises; unchecked (``check_values=False``),
    bad offsets run forward and backward without reading or writing outside the tensors."""
    script = _BAD_OFFSETS_SCRIPT.format(device=DEVICE)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ), timeout=300
    )
    assert proc.returncode == 0, f"exit code {proc.returncode}: {proc.stdout[-2000:]} {proc.stderr[-3000:]}"
    assert "raised: cu_seqlens_q[-1] = 40 but q has 37 rows" in proc.stdout
    assert "unchecked calls finished" in proc.stdout


def test_triton_backend_compiles_without_graph_break():
    q, k, v, kv, qv = _case()

    def f(q, k, v, kv, qv):
        return masked_attention(q, k, v, AttentionMask.from_key_valid(kv, qv), backend="triton")

    torch._dynamo.reset()
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(q, k, v, kv, qv)
    torch.testing.assert_close(out, f(q, k, v, kv, qv))


def test_bounds_are_computed_once_per_mask_and_reused():
    q, k, v, kv, qv = _case()
    masks = {
        "boolean": AttentionMask.from_key_valid(kv, qv),
        "lengths": AttentionMask.from_key_lengths(torch.tensor([4, 0], device=DEVICE), 7, qv),
    }
    for kind, mask in masks.items():
        first = masked_attention(q, k, v, mask, backend="triton")
        cached = mask._cache["triton_bounds"]
        assert cached["k_bound"].dtype == torch.int32
        want = [4, 0] if kind == "lengths" else [7, 0]  # last valid key + 1
        assert cached["k_bound"].tolist() == want
        assert cached["q_bound"].tolist() == [5, 5]
        assert (cached["key_valid"] is None) == (kind == "lengths")  # prefix keys read no mask bytes
        second = masked_attention(q, k, v, mask, backend="triton")
        assert mask._cache["triton_bounds"] is cached and torch.equal(first, second)


def test_dropout_without_generator_draws_no_device_seed(monkeypatch):
    import maskmm.attention.backends.base as backend_base

    def no_device_draw(*args, **kwargs):
        raise AssertionError("seed_from_generator must not run without a generator")

    monkeypatch.setattr(backend_base, "seed_from_generator", no_device_draw)
    q, k, v, kv, qv = _case()
    mask = AttentionMask.from_key_valid(kv, qv)
    torch.manual_seed(11)
    a = masked_attention(q, k, v, mask, dropout_p=0.3, backend="triton")
    torch.manual_seed(11)
    b = masked_attention(q, k, v, mask, dropout_p=0.3, backend="triton")
    torch.manual_seed(12)
    c = masked_attention(q, k, v, mask, dropout_p=0.3, backend="triton")
    assert torch.equal(a, b) and not torch.equal(a, c)
