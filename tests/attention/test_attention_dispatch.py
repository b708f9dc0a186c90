"""maskmm.attention.masked_attention / masked_attention_varlen on the CPU backends.

Every backend is compared with a float64 masked-softmax written here (values and gradients),
on random masks with fully masked rows, length-1 sequences, cross attention and query validity.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from maskmm.attention import (
    AttentionMask,
    MaskedAttention,
    available_backends,
    explain,
    masked_attention,
    masked_attention_varlen,
    select_backend,
)

TOL = {
    torch.float64: dict(atol=1e-10, rtol=1e-8),
    torch.float32: dict(atol=2e-5, rtol=2e-5),
    torch.bfloat16: dict(atol=3e-2, rtol=3e-2),
    torch.float16: dict(atol=4e-3, rtol=4e-3),
}
GRAD_BACKENDS = ["sdpa", "reference"]


def plain_attention(q, k, v, key_valid=None, query_valid=None, scale=None, keep=None, p=0.0):
    """Independent float64 definition: masked softmax, zero rows where nothing is allowed."""
    q, k, v = q.double(), k.double(), v.double()
    b, _, lq, d = q.shape
    lk = k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    s = torch.einsum("bhid,bhjd->bhij", q, k) * scale
    allowed = torch.ones(b, 1, lq, lk, dtype=torch.bool)
    if key_valid is not None:
        allowed = allowed & key_valid[:, None, None, :]
    if query_valid is not None:
        allowed = allowed & query_valid[:, None, :, None]
    allowed = allowed.expand_as(s)
    m = torch.where(allowed, s, torch.full_like(s, -1e300)).amax(-1, keepdim=True)
    e = torch.where(allowed, torch.exp(torch.where(allowed, s - m, torch.zeros_like(s))), torch.zeros_like(s))
    probs = e / e.sum(-1, keepdim=True).clamp_min(1e-300)
    if keep is not None:
        probs = probs * keep / (1 - p)
    return torch.einsum("bhij,bhjd->bhid", probs, v)


def random_case(b=3, h=2, lq=7, lk=9, d=16, dv=16, dtype=torch.float32, query_mask=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, lq, d, generator=g).to(dtype)
    k = torch.randn(b, h, lk, d, generator=g).to(dtype)
    v = torch.randn(b, h, lk, dv, generator=g).to(dtype)
    key_valid = torch.rand(b, lk, generator=g) > 0.4
    key_valid[0] = False  # a sample with no valid key
    key_valid[1] = False
    key_valid[1, lk - 1] = True  # exactly one valid key (the last)
    query_valid = None
    if query_mask:
        query_valid = torch.rand(b, lq, generator=g) > 0.3
        query_valid[2, 0] = False
        query_valid[2, -1] = lq > 1
    return q, k, v, key_valid, query_valid


def grads(out, inputs, seed=1):
    g = torch.Generator().manual_seed(seed)
    upstream = torch.randn(out.shape, generator=g, dtype=torch.float64)
    return torch.autograd.grad((out.double() * upstream).sum(), inputs), upstream


@pytest.mark.parametrize("backend", GRAD_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("shape", [(3, 2, 7, 9), (3, 1, 1, 5), (3, 2, 5, 1)])  # cross, Lq=1, Lk=1
def test_values_and_grads_match_float64(backend, dtype, shape):
    b, h, lq, lk = shape
    q, k, v, kv, qv = random_case(b, h, lq, lk, dtype=dtype)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    mask = AttentionMask.from_key_valid(kv, qv)
    out = masked_attention(q, k, v, mask, backend=backend)
    assert out.dtype == dtype and out.shape == (b, h, lq, 16)

    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = plain_attention(q64, k64, v64, kv, qv)
    torch.testing.assert_close(out.double(), ref, **TOL[dtype])

    (gq, gk, gv), up = grads(out, (q, k, v))
    rq, rk, rv = torch.autograd.grad((ref * up).sum(), (q64, k64, v64))
    tol = {k_: 4 * v_ for k_, v_ in TOL[dtype].items()}
    for got, want in ((gq, rq), (gk, rk), (gv, rv)):
        torch.testing.assert_close(got.double(), want, **tol)


@pytest.mark.parametrize("backend", [*GRAD_BACKENDS, "flex"])
def test_invalid_rows_are_exact_zeros_with_zero_grad(backend):
    q, k, v, kv, qv = random_case()
    needs_grad = backend != "flex"  # FlexAttention has no CPU backward
    q, k, v = (t.requires_grad_(needs_grad) for t in (q, k, v))
    mask = AttentionMask.from_key_valid(kv, qv)
    out = masked_attention(q, k, v, mask, backend=backend)
    dead = ~(kv.any(-1)[:, None] & qv)  # [B, Lq]
    assert dead[0].all() and not dead[1].all()
    assert torch.equal(out.permute(0, 2, 1, 3)[dead], torch.zeros_like(out.permute(0, 2, 1, 3)[dead]))
    assert not out.isnan().any()
    if needs_grad:
        (out * torch.randn_like(out)).sum().backward()
        assert torch.equal(
            q.grad.permute(0, 2, 1, 3)[dead], torch.zeros_like(q.grad.permute(0, 2, 1, 3)[dead])
        )
        assert torch.equal(k.grad[0], torch.zeros_like(k.grad[0]))  # sample 0 has no valid key
        assert torch.equal(v.grad[0], torch.zeros_like(v.grad[0]))
        assert not any(t.grad.isnan().any() for t in (q, k, v))


def test_flex_forward_matches_float64():
    q, k, v, kv, qv = random_case(lq=9, lk=9)
    for mask_qv in (None, qv):
        mask = AttentionMask.from_key_valid(kv, mask_qv)
        with torch.no_grad():
            out = masked_attention(q, k, v, mask, backend="flex")
        torch.testing.assert_close(out.double(), plain_attention(q, k, v, kv, mask_qv), **TOL[torch.float32])


@pytest.mark.parametrize("backend", GRAD_BACKENDS)
def test_no_mask_and_custom_scale(backend):
    q, k, v, _, _ = random_case(dv=8)
    out = masked_attention(q, k, v, backend=backend, scale=0.3)
    torch.testing.assert_close(out.double(), plain_attention(q, k, v, scale=0.3), **TOL[torch.float32])
    all_valid = AttentionMask.from_key_valid(torch.ones(3, 9, dtype=torch.bool))
    torch.testing.assert_close(masked_attention(q, k, v, all_valid, backend=backend, scale=0.3), out)


@pytest.mark.parametrize("backend", GRAD_BACKENDS)
def test_padding_invariance(backend):
    """Appending padded keys/queries (with junk values) never changes valid outputs."""
    q, k, v, kv, qv = random_case()
    base = masked_attention(q, k, v, AttentionMask.from_key_valid(kv, qv), backend=backend)
    pad_q, pad_k = 4, 6
    q2 = torch.cat([q, 100 * torch.randn(3, 2, pad_q, 16)], dim=2)
    k2 = torch.cat([k, 100 * torch.randn(3, 2, pad_k, 16)], dim=2)
    v2 = torch.cat([v, 100 * torch.randn(3, 2, pad_k, 16)], dim=2)
    kv2 = torch.cat([kv, torch.zeros(3, pad_k, dtype=torch.bool)], dim=1)
    qv2 = torch.cat([qv, torch.zeros(3, pad_q, dtype=torch.bool)], dim=1)
    out = masked_attention(q2, k2, v2, AttentionMask.from_key_valid(kv2, qv2), backend=backend)
    torch.testing.assert_close(out[:, :, :7], base, atol=1e-6, rtol=1e-6)
    assert torch.equal(out[:, :, 7:], torch.zeros_like(out[:, :, 7:]))


def test_backends_agree_with_each_other():
    q, k, v, kv, qv = random_case(dtype=torch.float64)
    mask = AttentionMask.from_key_valid(kv, qv)
    outs = [masked_attention(q, k, v, mask, backend=name) for name in GRAD_BACKENDS]
    torch.testing.assert_close(outs[0], outs[1], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("backend", ["auto", *GRAD_BACKENDS])
def test_varlen_equals_padded(backend):
    g = torch.Generator().manual_seed(3)
    q_lens, k_lens = [3, 1, 0, 5], [4, 2, 3, 0]
    h, d = 2, 16
    tq, tk = sum(q_lens), sum(k_lens)
    q = torch.randn(tq, h, d, generator=g, requires_grad=True)
    k = torch.randn(tk, h, d, generator=g, requires_grad=True)
    v = torch.randn(tk, h, d, generator=g, requires_grad=True)
    cu_q = torch.tensor([0, 3, 4, 4, 9], dtype=torch.int32)
    cu_k = torch.tensor([0, 4, 6, 9, 9], dtype=torch.int32)
    out = masked_attention_varlen(q, k, v, cu_q, cu_k, 5, 4, backend=backend)
    assert out.shape == (tq, h, d)
    # independent padded computation, per sequence
    for b in range(4):
        qs, ks = q[cu_q[b] : cu_q[b + 1]], k[cu_k[b] : cu_k[b + 1]]
        vs = v[cu_k[b] : cu_k[b + 1]]
        if k_lens[b] == 0:
            ref = torch.zeros(1, h, q_lens[b], d, dtype=torch.float64)
        else:
            ref = plain_attention(*(t.transpose(0, 1)[None] for t in (qs, ks, vs)))
        torch.testing.assert_close(
            out[cu_q[b] : cu_q[b + 1]].double(), ref[0].transpose(0, 1), **TOL[torch.float32]
        )
    out.sum().backward()
    assert torch.equal(q.grad[4:9], torch.zeros_like(q.grad[4:9]))  # sequence 3 has no keys
    # and the mask-based padded call gives the same rows
    mask = AttentionMask.from_cu_seqlens(cu_k, 4, cu_q, 5)
    assert mask.key_lengths is not None and mask.is_key_prefix()


def test_dropout_reference_reproducible_and_replayable():
    q, k, v, kv, qv = random_case()
    mask = AttentionMask.from_key_valid(kv, qv)
    p = 0.3
    a = masked_attention(
        q, k, v, mask, dropout_p=p, backend="reference", generator=torch.Generator().manual_seed(7)
    )
    b = masked_attention(
        q, k, v, mask, dropout_p=p, backend="reference", generator=torch.Generator().manual_seed(7)
    )
    c = masked_attention(
        q, k, v, mask, dropout_p=p, backend="reference", generator=torch.Generator().manual_seed(8)
    )
    assert torch.equal(a, b) and not torch.equal(a, c)
    keep = torch.rand(3, 2, 7, 9, generator=torch.Generator().manual_seed(7)) >= p  # documented draw
    torch.testing.assert_close(
        a.double(), plain_attention(q, k, v, kv, qv, keep=keep, p=p), **TOL[torch.float32]
    )


def test_dropout_sdpa_reproducible_under_generator_and_global_seed():
    q, k, v, kv, qv = random_case()
    mask = AttentionMask.from_key_valid(kv, qv)
    run = lambda seed: masked_attention(
        q, k, v, mask, dropout_p=0.4, backend="sdpa", generator=torch.Generator().manual_seed(seed)
    )
    state = torch.get_rng_state()
    a, b, c = run(1), run(1), run(2)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left untouched
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, masked_attention(q, k, v, mask, backend="sdpa"))
    dead = ~(kv.any(-1)[:, None] & qv)
    assert torch.equal(a.permute(0, 2, 1, 3)[dead], torch.zeros_like(a.permute(0, 2, 1, 3)[dead]))
    torch.manual_seed(5)
    d = masked_attention(q, k, v, mask, dropout_p=0.4, backend="sdpa")
    torch.manual_seed(5)
    e = masked_attention(q, k, v, mask, dropout_p=0.4, backend="sdpa")
    assert torch.equal(d, e)


def test_auto_picks_sdpa_on_cpu_and_explain():
    q, k, v, kv, qv = random_case()
    mask = AttentionMask.from_key_valid(kv, qv)
    assert select_backend(q, k, v, mask).name == "sdpa"
    reasons = explain(q, k, v, mask, dropout_p=0.1)
    assert reasons["auto"] == ["sdpa"]
    assert reasons["sdpa"] == [] and reasons["reference"] == []
    assert any("dropout" in r for r in reasons["flex"])
    assert any("not installed" in r or "compiled operators" in r for r in reasons["xformers"])
    names = available_backends("cpu")
    assert "sdpa" in names and "reference" in names and "xformers" not in names


def test_unable_backend_lists_every_reason():
    q, k, v, kv, _ = random_case()
    mask = AttentionMask.from_key_valid(kv)
    with pytest.raises(ValueError, match="xformers") as err:
        masked_attention(q, k, v, mask, backend="xformers")
    assert "CUDA" in str(err.value) and ("not installed" in str(err.value) or "compiled" in str(err.value))
    q.requires_grad_()
    with pytest.raises(ValueError, match="flex") as err:
        masked_attention(q, k, v, mask, backend="flex", dropout_p=0.1)
    assert "dropout" in str(err.value) and "backward" in str(err.value)


def test_triton_declines_cpu_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, k, v, kv, _ = random_case()
    with pytest.raises(ValueError, match=r"triton.*CUDA"):
        masked_attention(q, k, v, AttentionMask.from_key_valid(kv), backend="triton")


@pytest.mark.parametrize("backend", GRAD_BACKENDS)
def test_empty_inputs_give_zeros(backend):
    q = torch.randn(2, 2, 3, 8, requires_grad=True)
    k = torch.randn(2, 2, 0, 8)
    out = masked_attention(
        q, k, k, AttentionMask.from_key_valid(torch.zeros(2, 0, dtype=torch.bool)), backend=backend
    )
    assert out.shape == (2, 2, 3, 8) and torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.equal(q.grad, torch.zeros_like(q.grad))
    empty = masked_attention(torch.randn(0, 2, 3, 8), torch.randn(0, 2, 4, 8), torch.randn(0, 2, 4, 8))
    assert empty.shape == (0, 2, 3, 8)


def test_module_applies_dropout_only_in_training():
    q, k, v, kv, qv = random_case()
    mask = AttentionMask.from_key_valid(kv, qv)
    mod = MaskedAttention(dropout_p=0.5, backend="reference")
    mod.eval()
    torch.testing.assert_close(mod(q, k, v, mask), masked_attention(q, k, v, mask, backend="reference"))
    mod.train()
    assert not torch.equal(
        mod(q, k, v, mask, generator=torch.Generator().manual_seed(0)), mod.eval()(q, k, v, mask)
    )


def _call(**overrides):
    q, k, v, kv, qv = random_case()
    args = dict(q=q, k=k, v=v, mask=AttentionMask.from_key_valid(kv, qv))
    kwargs = {}
    for key, val in overrides.items():
        (args if key in args else kwargs)[key] = val
    return masked_attention(args["q"], args["k"], args["v"], args["mask"], **kwargs)


@pytest.mark.parametrize(
    "overrides, exc, words",
    [
        (dict(q=torch.randn(3, 7, 16)), ValueError, "q must have shape"),
        (dict(k=torch.randint(0, 3, (3, 2, 9, 16))), TypeError, "k must have dtype"),
        (dict(v=torch.randn(3, 2, 9, 16, dtype=torch.float64)), TypeError, "share a dtype"),
        (dict(k=torch.randn(3, 2, 8, 16)), ValueError, "k, v sharing L"),
        (dict(k=torch.randn(3, 2, 9, 8)), ValueError, "head dim"),
        (dict(q=torch.randn(2, 2, 7, 16)), ValueError, "matching batch"),
        (
            dict(mask=AttentionMask.from_key_valid(torch.ones(3, 8, dtype=torch.bool))),
            ValueError,
            "mask.key_valid",
        ),
        (
            dict(
                mask=AttentionMask.from_key_valid(
                    torch.ones(3, 9, dtype=torch.bool), torch.ones(3, 6, dtype=torch.bool)
                )
            ),
            ValueError,
            "mask.query_valid",
        ),
        (dict(mask=torch.ones(3, 9, dtype=torch.bool)), TypeError, "mask must be"),
        (dict(dropout_p=1.0), ValueError, "dropout_p"),
        (dict(dropout_p="0.1"), TypeError, "dropout_p"),
        (dict(scale="big"), TypeError, "scale"),
        (dict(scale=float("nan")), ValueError, "scale"),
        (dict(backend="cuda-magic"), ValueError, "backend"),
        (dict(generator=3), TypeError, "generator"),
    ],
)
def test_bad_input_names_the_argument(overrides, exc, words):
    with pytest.raises(exc, match=words):
        _call(**overrides)


def test_varlen_bad_input():
    x = torch.randn(5, 2, 16)
    cu = torch.tensor([0, 2, 5], dtype=torch.int32)
    with pytest.raises(TypeError, match="cu_seqlens_q"):
        masked_attention_varlen(x, x, x, cu.float(), cu, 3, 3)
    with pytest.raises(ValueError, match="cu_seqlens_k"):
        masked_attention_varlen(x, x, x, cu, cu[:2], 3, 3)
    with pytest.raises(ValueError, match="max_seqlen_k"):
        masked_attention_varlen(x, x, x, cu, cu, 3, -1)
    with pytest.raises(ValueError, match=r"q must have shape \[T, H, D\]"):
        masked_attention_varlen(x[None], x, x, cu, cu, 3, 3)


ALL_BACKENDS = ["auto", "reference", "sdpa", "flex", "triton", "xformers"]


def _skip_unless_runs_on_cpu(backend):
    if backend == "auto" or backend in available_backends("cpu"):
        return
    q = torch.zeros(1, 1, 16, 16)
    pytest.skip(f"{backend} does not run on this machine: {'; '.join(explain(q, q, q)[backend])}")


def _i32(*values):
    return torch.tensor(values, dtype=torch.int32)


def _packed(rows_q=37, rows_k=37, seed=4, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(rows_q, 2, 16, generator=g)
    k, v = (torch.randn(rows_k, 2, 16, generator=g) for _ in range(2))
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


def _varlen_reference(q, k, v, cu_q, cu_k):
    """Float64 ``[Tq, H, D]``: each sequence attends within itself (zeros without keys)."""
    out = torch.zeros(q.shape, dtype=torch.float64)
    for b in range(cu_q.shape[0] - 1):
        rows = slice(int(cu_q[b]), int(cu_q[b + 1]))
        keys = slice(int(cu_k[b]), int(cu_k[b + 1]))
        if keys.stop > keys.start:
            seqs = (t.detach().transpose(0, 1)[None] for t in (q[rows], k[keys], v[keys]))
            out[rows] = plain_attention(*seqs)[0].transpose(0, 1)
    return out


CU_37 = _i32(0, 20, 37)  # two sequences (20 and 17 rows) filling 37 rows
# (id, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, words of the error); q, k, v have 37 rows
VARLEN_VALUE_CASES = [
    ("q-ends-past-rows", _i32(0, 20, 40), CU_37, 20, 20, "cu_seqlens_q[-1] = 40 but q has 37 rows"),
    ("k-ends-before-rows", CU_37, _i32(0, 20, 30), 20, 20, "cu_seqlens_k[-1] = 30 but k has 37 rows"),
    (
        "k-int64-ends-far-past-rows",
        CU_37.long(),
        torch.tensor([0, 20, 2**40]),
        20,
        20,
        f"cu_seqlens_k[-1] = {2**40} but k has 37 rows",
    ),
    ("q-starts-late", _i32(3, 20, 37), CU_37, 20, 20, "cu_seqlens_q[0] must be 0, got 3"),
    ("k-starts-negative", CU_37, _i32(-4, 20, 37), 20, 24, "cu_seqlens_k[0] must be 0, got -4"),
    (
        "q-decreasing",
        _i32(0, 25, 20, 37),
        _i32(0, 10, 20, 37),
        25,
        17,
        "cu_seqlens_q must be non-decreasing, got cu_seqlens_q[2] = 20 < cu_seqlens_q[1] = 25",
    ),
    (
        "k-decreasing",
        _i32(0, 10, 20, 37),
        _i32(0, 30, 5, 37),
        17,
        32,
        "cu_seqlens_k must be non-decreasing, got cu_seqlens_k[2] = 5 < cu_seqlens_k[1] = 30",
    ),
    ("max-q-too-small", CU_37, CU_37, 8, 20, "max_seqlen_q = 8 but sequence 0 has 20 rows"),
    ("max-k-too-small", CU_37, _i32(0, 17, 37), 20, 19, "max_seqlen_k = 19 but sequence 1 has 20 rows"),
]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("case", VARLEN_VALUE_CASES, ids=[c[0] for c in VARLEN_VALUE_CASES])
def test_varlen_bad_values_raise_naming_the_argument(case, backend):
    _skip_unless_runs_on_cpu(backend)
    _, cu_q, cu_k, max_q, max_k, words = case
    q, k, v = _packed()
    with pytest.raises(ValueError) as info:
        masked_attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, backend=backend)
    assert words in str(info.value)


@pytest.mark.parametrize("backend", ["reference", "sdpa", "flex"])
@pytest.mark.parametrize("case", VARLEN_VALUE_CASES, ids=[c[0] for c in VARLEN_VALUE_CASES])
def test_varlen_unchecked_bad_values_stay_inside_the_tensors(case, backend):
    """``check_values=False``: bad offsets give some numbers, never an index error (the Triton
    backend is covered by a subprocess test in test_attention_triton_backend.py)."""
    _, cu_q, cu_k, max_q, max_k, _ = case
    q, k, v = _packed(requires_grad=backend != "flex")  # FlexAttention has no CPU backward
    out = masked_attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, backend=backend, check_values=False)
    assert out.shape == q.shape and torch.isfinite(out).all()
    if backend != "flex":
        out.sum().backward()
        assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_varlen_valid_inputs_match_reference_on_every_backend(backend):
    """Exact and larger ``max_seqlen`` (allowed: more padding), checked and unchecked, agree with
    the float64 per-sequence definition."""
    _skip_unless_runs_on_cpu(backend)
    q, k, v = _packed(rows_q=12, rows_k=15)
    cu_q, cu_k = _i32(0, 5, 5, 12), _i32(0, 4, 15, 15)  # an empty query and an empty key sequence
    ref = _varlen_reference(q, k, v, cu_q, cu_k)
    for max_q, max_k, check in ((7, 11, True), (9, 16, True), (7, 11, False)):
        out = masked_attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, backend=backend, check_values=check)
        torch.testing.assert_close(out.double(), ref, **TOL[torch.float32])
    out = masked_attention_varlen(q, k, v, cu_q.long(), cu_k.long(), 7, 11, backend=backend)
    torch.testing.assert_close(out.double(), ref, **TOL[torch.float32])
    assert torch.equal(out[5:], torch.zeros_like(out[5:]))  # sequence 2 has no keys


def test_varlen_reads_the_offsets_once_and_not_at_all_unchecked(monkeypatch):
    import maskmm.kernels.attention._validate as validate

    calls = []
    real = validate.varlen_value_problems

    def counting(*args, **kwargs):
        calls.append(args[:2])
        return real(*args, **kwargs)

    monkeypatch.setattr(validate, "varlen_value_problems", counting)
    q, k, v = _packed()
    masked_attention_varlen(q, k, v, CU_37, CU_37, 20, 20, backend="sdpa")
    assert len(calls) == 1
    masked_attention_varlen(q, k, v, CU_37, CU_37, 20, 20, backend="sdpa", check_values=False)
    assert len(calls) == 1
    with pytest.raises(TypeError, match="check_values"):
        masked_attention_varlen(q, k, v, CU_37, CU_37, 20, 20, check_values=1)


@pytest.mark.gpu
def test_varlen_value_check_is_one_host_sync_on_cuda():
    q, k, v = (t.cuda() for t in _packed())
    cu = CU_37.cuda()
    syncs = []
    for check in (False, True):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as record:
                warnings.simplefilter("always")
                masked_attention_varlen(q, k, v, cu, cu, 20, 20, backend="sdpa", check_values=check)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        syncs.append(sum("synchronizing" in str(w.message) for w in record))
    assert syncs[1] - syncs[0] == 1, syncs


def test_auto_order_per_device_and_mask():
    from maskmm.attention.dispatch import _auto_order

    # Masked CUDA calls go to the fused kernel first; unmasked ones to SDPA's dense kernels.
    assert _auto_order("cuda", True) == ("triton", "sdpa")
    assert _auto_order("cuda", False) == ("sdpa",)
    assert _auto_order("cpu", True) == ("sdpa",) and _auto_order("cpu", False) == ("sdpa",)
    # compiled FlexAttention recompiles per shape: never picked automatically
    assert all("flex" not in _auto_order(d, m) for d in ("cuda", "cpu") for m in (True, False))
