"""Triton masked flash attention vs a float64 reference: values, gradients, masks, layouts, dropout.

Without CUDA the kernels run through Triton's interpreter (``TRITON_INTERPRET=1``, set by the
conftest), so CPU shapes stay tiny; the ``gpu`` tests use real encoder shapes.
"""

from __future__ import annotations

import math

import pytest
import torch
from maskmm.kernels.attention import (
    attention_dropout_mask,
    attention_reference,
    flash_attention,
    flash_attention_varlen,
)
from maskmm.kernels.attention._validate import interpreting

if interpreting():
    DEVICE = "cpu"
elif torch.cuda.is_available():
    DEVICE = "cuda"
else:  # pragma: no cover - the conftest sets TRITON_INTERPRET without CUDA
    pytest.skip("needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)

# Values and gradients of a fp32 kernel against float64 (absolute; inputs ~N(0, 1)).
FP32_ATOL = {"out": 2e-5, "grad": 1e-4}
# Low precision: error vs float64 at most RATIO x the error of the same computation done by torch
# in that dtype, plus a floor for cases where torch happens to be nearly exact.
LOW_RATIO = 3.0
LOW_FLOOR = {torch.float16: 5e-4, torch.bfloat16: 4e-3}


def naive_attention(q, k, v, key_valid=None, query_valid=None, scale=None, keep=None, dropout_p=0.0):
    """Plain masked attention in the inputs' dtype (independent of the code under test)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ k.transpose(-1, -2)) * scale
    allowed = torch.ones(s.shape, dtype=torch.bool, device=s.device)
    if key_valid is not None:
        allowed = allowed & key_valid[:, None, None, :]
    if query_valid is not None:
        allowed = allowed & query_valid[:, None, :, None]
    has_key = allowed.any(-1, keepdim=True)
    s = s.masked_fill(~allowed, float("-inf")).masked_fill(~has_key, 0.0)
    probs = torch.softmax(s, dim=-1) * has_key
    if keep is not None:
        probs = probs * keep / (1.0 - dropout_p)
    return probs @ v


def make_qkv(b, h, lq, lk, d, dtype, *, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g).to(DEVICE, dtype) for n in (lq, lk, lk)]


def run_with_grads(fn, tensors, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, leaves, grad_out.to(out.dtype))
    return out.detach(), [g.detach() for g in grads]


def max_err(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def assert_close_to_float64(dtype, kernel_fn, torch_fn, tensors, grad_out):
    """Kernel values and grads vs float64 truth, with per-dtype tolerances."""
    out, grads = run_with_grads(kernel_fn, tensors, grad_out)
    ref, ref_grads = run_with_grads(torch_fn, [t.double() for t in tensors], grad_out.double())
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    if dtype == torch.float32:
        assert max_err(out, ref) <= FP32_ATOL["out"]
        for g, rg in zip(grads, ref_grads):
            assert max_err(g, rg) <= FP32_ATOL["grad"]
        return
    low, low_grads = run_with_grads(torch_fn, tensors, grad_out)
    assert max_err(out, ref) <= LOW_RATIO * max_err(low, ref) + LOW_FLOOR[dtype]
    for name, g, lg, rg in zip("qkv", grads, low_grads, ref_grads):
        assert max_err(g, rg) <= LOW_RATIO * max_err(lg, rg) + LOW_FLOOR[dtype], name


def random_masks(b, lq, lk, g):
    """Key validity with a fully-masked sample and a single-key sample; random query validity."""
    key_valid = torch.rand(b, lk, generator=g) > 0.4
    key_valid[0, 0] = True
    key_valid[1] = False
    key_valid[2] = False
    key_valid[2, lk // 2] = True
    query_valid = torch.rand(b, lq, generator=g) > 0.3
    return key_valid.to(DEVICE), query_valid.to(DEVICE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_key_and_query_masks_match_reference(dtype):
    g = torch.Generator().manual_seed(1)
    b, h, lq, lk, d = 3, 2, 23, 37, 16
    key_valid, query_valid = random_masks(b, lq, lk, g)
    tensors = make_qkv(b, h, lq, lk, d, dtype, seed=2)
    grad_out = torch.randn(b, h, lq, d, generator=g).to(DEVICE)
    assert_close_to_float64(
        dtype,
        lambda q, k, v: flash_attention(
            q, k, v, key_valid=key_valid, query_valid=query_valid, block_m=16, block_n=16
        ),
        lambda q, k, v: naive_attention(q, k, v, key_valid=key_valid, query_valid=query_valid),
        tensors,
        grad_out,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_key_lengths_cross_attention_odd_lengths(dtype):
    g = torch.Generator().manual_seed(3)
    b, h, lq, lk, d = 3, 1, 19, 33, 32
    key_lengths = torch.tensor([33, 0, 1], device=DEVICE)
    key_valid = torch.arange(lk, device=DEVICE)[None, :] < key_lengths[:, None]
    tensors = make_qkv(b, h, lq, lk, d, dtype, seed=4)
    grad_out = torch.randn(b, h, lq, d, generator=g).to(DEVICE)
    assert_close_to_float64(
        dtype,
        lambda q, k, v: flash_attention(q, k, v, key_lengths=key_lengths, scale=0.3, block_m=16, block_n=16),
        lambda q, k, v: naive_attention(q, k, v, key_valid=key_valid, scale=0.3),
        tensors,
        grad_out,
    )


@pytest.mark.parametrize("d", [16, 24, 80])
def test_head_dims_and_default_blocks(d):
    """Default tile table, unmasked attention, head dims padded inside the kernel (24 -> 32, 80 -> 128)."""
    g = torch.Generator().manual_seed(d)
    b, h, lq, lk = 1, 2, 9, 21
    tensors = make_qkv(b, h, lq, lk, d, torch.float32, seed=d)
    grad_out = torch.randn(b, h, lq, d, generator=g).to(DEVICE)
    assert_close_to_float64(torch.float32, flash_attention, naive_attention, tensors, grad_out)


def test_rows_without_keys_and_invalid_queries_are_zero_with_zero_grad():
    b, h, lq, lk, d = 2, 2, 17, 20, 16
    q, k, v = (t.requires_grad_() for t in make_qkv(b, h, lq, lk, d, torch.float32, seed=5))
    key_valid = torch.ones(b, lk, dtype=torch.bool, device=DEVICE)
    key_valid[1] = False
    query_valid = torch.ones(b, lq, dtype=torch.bool, device=DEVICE)
    query_valid[0, 3] = False
    query_valid[0, 16] = False
    out = flash_attention(q, k, v, key_valid=key_valid, query_valid=query_valid, block_m=16, block_n=16)
    out.sum().backward()
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert torch.equal(out[0, :, [3, 16]], torch.zeros_like(out[0, :, [3, 16]]))
    assert out[0, :, 0].abs().sum() > 0
    assert torch.equal(q.grad[1], torch.zeros_like(q.grad[1]))
    assert torch.equal(q.grad[0, :, [3, 16]], torch.zeros_like(q.grad[0, :, [3, 16]]))
    # Keys of the sample without valid keys receive nothing either.
    assert torch.equal(k.grad[1], torch.zeros_like(k.grad[1]))
    assert torch.equal(v.grad[1], torch.zeros_like(v.grad[1]))
    assert v.grad[0].abs().sum() > 0


def test_keys_and_queries_beyond_the_bounds_are_never_read():
    """NaN beyond the last valid key / query cannot leak: those tiles are skipped, not masked."""
    b, h, lq, lk, d = 2, 1, 40, 40, 16
    q, k, v = make_qkv(b, h, lq, lk, d, torch.float32, seed=6)
    key_valid = torch.zeros(b, lk, dtype=torch.bool, device=DEVICE)
    key_valid[0, [0, 5, 9]] = True
    key_valid[1, :14] = True
    query_valid = torch.zeros(b, lq, dtype=torch.bool, device=DEVICE)
    query_valid[:, :11] = True
    query_valid[1, 30:] = True
    clean = run_with_grads(
        lambda q, k, v: flash_attention(
            q, k, v, key_valid=key_valid, query_valid=query_valid, block_m=16, block_n=16
        ),
        [q, k, v],
        torch.ones(b, h, lq, d, device=DEVICE),
    )
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    k2[0, :, 10:] = float("nan")
    v2[0, :, 10:] = float("nan")
    k2[1, :, 14:] = float("nan")
    v2[1, :, 14:] = float("nan")
    q2[0, :, 11:] = float("nan")
    out, grads = run_with_grads(
        lambda q, k, v: flash_attention(
            q, k, v, key_valid=key_valid, query_valid=query_valid, block_m=16, block_n=16
        ),
        [q2, k2, v2],
        torch.ones(b, h, lq, d, device=DEVICE),
    )
    assert torch.equal(out, clean[0])
    assert torch.isfinite(grads[1]).all() and torch.isfinite(grads[2]).all()
    assert torch.equal(grads[2][:, :, :9], clean[1][2][:, :, :9])


def test_strided_inputs_keep_their_layout():
    b, lq, lk, h, d = 2, 13, 11, 3, 16
    g = torch.Generator().manual_seed(7)
    q_bl = torch.randn(b, lq, h, d, generator=g).to(DEVICE)
    kv_bl = torch.randn(b, lk, 2, h, 2 * d, generator=g).to(DEVICE)
    q = q_bl.transpose(1, 2)  # [B, H, L, D] view of a [B, L, H, D] buffer
    k = kv_bl[:, :, 0, :, :d].transpose(1, 2)  # not dense, unit last stride
    v = kv_bl[:, :, 1, :, ::2].transpose(1, 2)  # last-dim stride 2: copied
    out = flash_attention(q, k, v, block_m=16, block_n=16)
    ref = naive_attention(q.double(), k.double(), v.double())
    assert out.stride() == q.stride()
    assert max_err(out, ref) <= FP32_ATOL["out"]


def test_same_inputs_give_bitwise_equal_outputs_and_grads():
    tensors = make_qkv(2, 2, 21, 18, 16, torch.float32, seed=8)
    key_valid = torch.rand(2, 18, generator=torch.Generator().manual_seed(9)).to(DEVICE) > 0.5
    grad_out = torch.randn(2, 2, 21, 16, generator=torch.Generator().manual_seed(10)).to(DEVICE)
    fn = lambda q, k, v: flash_attention(q, k, v, key_valid=key_valid, block_m=16, block_n=16)
    a_out, a_grads = run_with_grads(fn, tensors, grad_out)
    b_out, b_grads = run_with_grads(fn, tensors, grad_out)
    assert torch.equal(a_out, b_out)
    assert all(torch.equal(x, y) for x, y in zip(a_grads, b_grads))


def _pack(x, lengths):
    return torch.cat([x[i, : int(n)] for i, n in enumerate(lengths)], dim=0)


@pytest.mark.parametrize("dropout_p", [0.0, 0.25])
def test_varlen_equals_padded(dropout_p):
    g = torch.Generator().manual_seed(11)
    h, d = 2, 16
    lens_q, lens_k = [7, 0, 18], [5, 9, 0]
    max_q, max_k = 18, 9
    b = len(lens_q)
    q_pad = torch.randn(b, max_q, h, d, generator=g).to(DEVICE)
    k_pad = torch.randn(b, max_k, h, d, generator=g).to(DEVICE)
    v_pad = torch.randn(b, max_k, h, d, generator=g).to(DEVICE)
    do_pad = torch.randn(b, max_q, h, d, generator=g).to(DEVICE)
    query_valid = torch.arange(max_q)[None, :] < torch.tensor(lens_q)[:, None]
    key_lengths = torch.tensor(lens_k, device=DEVICE)

    def cu(lens):
        return torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)

    packed = [_pack(q_pad, lens_q), _pack(k_pad, lens_k), _pack(v_pad, lens_k)]
    out_v, grads_v = run_with_grads(
        lambda q, k, v: flash_attention_varlen(
            q, k, v, cu(lens_q), cu(lens_k), max_q, max_k, dropout_p=dropout_p, seed=5, block_m=16, block_n=16
        ),
        packed,
        _pack(do_pad, lens_q),
    )
    out_p, grads_p = run_with_grads(
        lambda q, k, v: flash_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            key_lengths=key_lengths,
            query_valid=query_valid.to(DEVICE),
            dropout_p=dropout_p,
            seed=5,
            block_m=16,
            block_n=16,
        ).transpose(1, 2),
        [q_pad, k_pad, v_pad],
        do_pad,
    )
    assert out_v.shape == (sum(lens_q), h, d)
    assert torch.allclose(out_v, _pack(out_p, lens_q), atol=1e-6, rtol=0)
    for gv, gp, lens in zip(grads_v, grads_p, (lens_q, lens_k, lens_k)):
        assert torch.allclose(gv, _pack(gp, lens), atol=1e-6, rtol=0)
    assert out_v[:7].abs().sum() > 0  # the first sequence has keys
    assert torch.equal(out_v[7:], torch.zeros_like(out_v[7:]))  # the last sequence has none


def test_dropout_kernel_equals_reference_with_replayed_mask():
    g = torch.Generator().manual_seed(12)
    b, h, lq, lk, d, p = 2, 2, 19, 26, 16, 0.3
    key_valid = (torch.rand(b, lk, generator=g) > 0.3).to(DEVICE)
    tensors = make_qkv(b, h, lq, lk, d, torch.float32, seed=13)
    grad_out = torch.randn(b, h, lq, d, generator=g).to(DEVICE)
    keep = attention_dropout_mask(1234, b, h, lq, lk, p, DEVICE)
    assert keep.dtype == torch.bool and keep.shape == (b, h, lq, lk)
    assert abs(keep.float().mean().item() - (1 - p)) < 0.05
    out, grads = run_with_grads(
        lambda q, k, v: flash_attention(
            q, k, v, key_valid=key_valid, dropout_p=p, seed=1234, block_m=16, block_n=16
        ),
        tensors,
        grad_out,
    )
    for fn in (
        lambda q, k, v: attention_reference(q, k, v, key_valid=key_valid, dropout_p=p, dropout_mask=keep),
        lambda q, k, v: naive_attention(q, k, v, key_valid=key_valid, keep=keep, dropout_p=p),
    ):
        ref, ref_grads = run_with_grads(fn, [t.double() for t in tensors], grad_out.double())
        assert max_err(out, ref) <= FP32_ATOL["out"]
        for gk, gr in zip(grads, ref_grads):
            assert max_err(gk, gr) <= FP32_ATOL["grad"]


def test_dropout_is_reproducible_and_independent_of_tiles():
    q, k, v = make_qkv(1, 2, 20, 24, 16, torch.float32, seed=14)
    a = flash_attention(q, k, v, dropout_p=0.5, seed=7, block_m=16, block_n=16)
    b = flash_attention(q, k, v, dropout_p=0.5, seed=7, block_m=32, block_n=32)
    c = flash_attention(q, k, v, dropout_p=0.5, seed=8, block_m=16, block_n=16)
    assert torch.allclose(a, b, atol=1e-6, rtol=0)
    assert not torch.allclose(a, c, atol=1e-3)
    m7 = attention_dropout_mask(7, 1, 2, 20, 24, 0.5, DEVICE)
    assert torch.equal(m7, attention_dropout_mask(7, 1, 2, 20, 24, 0.5, DEVICE))
    assert not torch.equal(m7, attention_dropout_mask(8, 1, 2, 20, 24, 0.5, DEVICE))
    assert not torch.equal(m7[0, 0], m7[0, 1])  # heads draw different masks
    assert attention_dropout_mask(7, 1, 1, 3, 4, 0.0, DEVICE).all()
    # Without a seed, the seed is drawn from torch's default generator.
    torch.manual_seed(3)
    d1 = flash_attention(q, k, v, dropout_p=0.5)
    torch.manual_seed(3)
    d2 = flash_attention(q, k, v, dropout_p=0.5)
    assert torch.equal(d1, d2)


def test_empty_key_and_query_sets():
    q, k, v = make_qkv(1, 1, 5, 0, 16, torch.float32)
    q.requires_grad_()
    out = flash_attention(q, k, v)
    assert out.shape == (1, 1, 5, 16) and torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.equal(q.grad, torch.zeros_like(q))
    q0, k0, v0 = make_qkv(2, 1, 0, 6, 16, torch.float32)
    assert flash_attention(q0, k0, v0).shape == (2, 1, 0, 16)


GPU_CASES = [
    # (B, H, Lq, Lk, D): ViT-B self attention, BERT text, cross attention text -> image, head dim 128
    (8, 12, 197, 197, 64),
    (8, 12, 40, 40, 64),
    (8, 12, 37, 197, 64),
    (2, 4, 300, 257, 128),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", GPU_CASES)
def test_gpu_real_shapes_match_reference(shape, dtype):
    if DEVICE != "cuda":
        pytest.skip("runs compiled kernels on CUDA; TRITON_INTERPRET=1 is set")
    b, h, lq, lk, d = shape
    g = torch.Generator().manual_seed(15)
    key_lengths = torch.randint(1, lk + 1, (b,), generator=g)
    key_lengths[0] = 0
    key_valid = (torch.arange(lk)[None, :] < key_lengths[:, None]) & (torch.rand(b, lk, generator=g) > 0.1)
    key_valid = key_valid.to(DEVICE)
    tensors = make_qkv(b, h, lq, lk, d, dtype, seed=16)
    grad_out = torch.randn(b, h, lq, d, generator=g).to(DEVICE)
    assert_close_to_float64(
        dtype,
        lambda q, k, v: flash_attention(q, k, v, key_valid=key_valid),
        lambda q, k, v: naive_attention(q, k, v, key_valid=key_valid),
        tensors,
        grad_out,
    )


@pytest.mark.gpu
def test_gpu_dropout_and_varlen():
    if DEVICE != "cuda":
        pytest.skip("runs compiled kernels on CUDA; TRITON_INTERPRET=1 is set")
    b, h, n, d, p = 4, 12, 197, 64, 0.1
    tensors = make_qkv(b, h, n, n, d, torch.float16, seed=17)
    grad_out = torch.randn(b, h, n, d).to(DEVICE)
    keep = attention_dropout_mask(99, b, h, n, n, p, DEVICE)
    assert_close_to_float64(
        torch.float16,
        lambda q, k, v: flash_attention(q, k, v, dropout_p=p, seed=99),
        lambda q, k, v: naive_attention(q, k, v, keep=keep, dropout_p=p),
        tensors,
        grad_out,
    )
    lens = torch.tensor([197, 150, 1, 60])
    cu = torch.tensor([0, *lens.cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    q_pad = tensors[0].transpose(1, 2)
    packed = _pack(q_pad, lens)
    out_v = flash_attention_varlen(packed, packed, packed, cu, cu, n, n)
    out_p = flash_attention(tensors[0], tensors[0], tensors[0], key_lengths=lens.to(DEVICE)).transpose(1, 2)
    assert torch.allclose(out_v, _pack(out_p, lens), atol=1e-3, rtol=0)


def test_compiles_without_graph_breaks():
    """Under torch.compile the kernels are opaque custom ops: one graph, same values and grads."""
    torch._dynamo.reset()
    tensors = make_qkv(1, 2, 9, 7, 16, torch.float32, seed=18)
    key_valid = torch.tensor([[True, True, False, True, True, False, False]], device=DEVICE)
    grad_out = torch.randn(1, 2, 9, 16, generator=torch.Generator().manual_seed(19)).to(DEVICE)

    key_lengths = torch.tensor([4], device=DEVICE)

    def fn(q, k, v):
        masked = flash_attention(q, k, v, key_valid=key_valid, dropout_p=0.2, seed=3)
        return masked + flash_attention(q, k, v, key_lengths=key_lengths)  # value check skipped in tracing

    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    out_c, grads_c = run_with_grads(compiled, tensors, grad_out)
    out_e, grads_e = run_with_grads(fn, tensors, grad_out)
    assert torch.equal(out_c, out_e)
    assert all(torch.equal(a, b) for a, b in zip(grads_c, grads_e))


def test_out_of_range_bounds_act_as_clamped():
    """``attention_with_bounds`` (the dispatcher's entry) clamps bounds inside the kernel."""
    from maskmm.kernels.attention.flash import attention_with_bounds

    b, h, lq, lk, d = 3, 1, 9, 11, 16
    tensors = make_qkv(b, h, lq, lk, d, torch.float32, seed=20)
    grad_out = torch.randn(b, h, lq, d, generator=torch.Generator().manual_seed(21)).to(DEVICE)
    bound = lambda vals: torch.tensor(vals, dtype=torch.int32, device=DEVICE)
    key_valid = torch.arange(lk, device=DEVICE)[None, :] < bound([11, 0, 4])[:, None]
    out, grads = run_with_grads(
        lambda q, k, v: attention_with_bounds(
            q,
            k,
            v,
            k_bound=bound([50, -3, 4]),
            q_bound=bound([99, 9, -1]),
            key_valid=None,
            query_valid=None,
            scale=None,
            dropout_p=0.0,
            seed=None,
            block_m=16,
            block_n=16,
        ),
        tensors,
        grad_out,
    )
    query_valid = torch.arange(lq, device=DEVICE)[None, :] < bound([9, 9, 0])[:, None]
    ref, ref_grads = run_with_grads(
        lambda q, k, v: naive_attention(q, k, v, key_valid=key_valid, query_valid=query_valid),
        [t.double() for t in tensors],
        grad_out.double(),
    )
    assert max_err(out, ref) <= FP32_ATOL["out"]
    for g, rg in zip(grads, ref_grads):
        assert max_err(g, rg) <= FP32_ATOL["grad"]
    assert torch.equal(out[1:], torch.zeros_like(out[1:]))
