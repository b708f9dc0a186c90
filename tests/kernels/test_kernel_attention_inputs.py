"""Bad inputs to the Triton attention kernel raise before launch, naming the argument;
``triton_unsupported_reasons`` reports the same checks as a list."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from maskmm.kernels.attention import (
    attention_dropout_mask,
    flash_attention,
    flash_attention_varlen,
    triton_unsupported_reasons,
)
from maskmm.kernels.attention._validate import interpreting

DEVICE = "cpu" if interpreting() or not torch.cuda.is_available() else "cuda"
B, H, LQ, LK, D = 2, 2, 5, 4, 16


def t(*shape, dtype=torch.float32):
    return torch.zeros(*shape, dtype=dtype, device=DEVICE)


def qkv(**over):
    base = {"q": t(B, H, LQ, D), "k": t(B, H, LK, D), "v": t(B, H, LK, D)}
    base.update(over)
    return base["q"], base["k"], base["v"]


PADDED_CASES = [
    # (id, args, kwargs, exception, words the message must contain)
    ("q-not-tensor", ([1.0], t(B, H, LK, D), t(B, H, LK, D)), {}, TypeError, ["q", "torch.Tensor"]),
    ("q-3d", qkv(q=t(B, LQ, D)), {}, ValueError, ["q", "[B, H, L, D]", "[2, 5, 16]"]),
    ("k-batch", qkv(k=t(3, H, LK, D)), {}, ValueError, ["B and H", "[3, 2, 4, 16]"]),
    ("v-heads", qkv(v=t(B, 3, LK, D)), {}, ValueError, ["B and H"]),
    ("v-length", qkv(v=t(B, H, LK + 1, D)), {}, ValueError, ["key length"]),
    ("v-head-dim", qkv(v=t(B, H, LK, 32)), {}, ValueError, ["head dim"]),
    ("float64", qkv(q=t(B, H, LQ, D, dtype=torch.float64)), {}, TypeError, ["q", "float64"]),
    ("mixed-dtype", qkv(k=t(B, H, LK, D, dtype=torch.float16)), {}, TypeError, ["one dtype"]),
    (
        "head-dim-160",
        (t(1, 1, 3, 160), t(1, 1, 3, 160), t(1, 1, 3, 160)),
        {},
        ValueError,
        ["q", "160", "[1, 1, 3, 160]"],
    ),
    (
        "key-valid-shape",
        qkv(),
        {"key_valid": t(B, LK + 1, dtype=torch.bool)},
        ValueError,
        ["key_valid", "[2, 4]"],
    ),
    ("key-valid-dtype", qkv(), {"key_valid": t(B, LK)}, TypeError, ["key_valid", "torch.bool"]),
    (
        "query-valid-shape",
        qkv(),
        {"query_valid": t(B, LK, dtype=torch.bool)},
        ValueError,
        ["query_valid", "[2, 5]"],
    ),
    ("key-lengths-dtype", qkv(), {"key_lengths": t(B)}, TypeError, ["key_lengths", "int"]),
    (
        "key-lengths-shape",
        qkv(),
        {"key_lengths": t(B, 1, dtype=torch.int64)},
        ValueError,
        ["key_lengths", "[2]"],
    ),
    (
        "both-key-masks",
        qkv(),
        {"key_lengths": t(B, dtype=torch.int64), "key_valid": t(B, LK, dtype=torch.bool)},
        ValueError,
        ["key_lengths", "key_valid"],
    ),
    ("dropout-one", qkv(), {"dropout_p": 1.0}, ValueError, ["dropout_p"]),
    ("dropout-type", qkv(), {"dropout_p": "0.1"}, TypeError, ["dropout_p"]),
    ("seed-negative", qkv(), {"seed": -1}, ValueError, ["seed"]),
    ("seed-float", qkv(), {"seed": 1.5}, TypeError, ["seed"]),
    ("scale-nan", qkv(), {"scale": float("nan")}, ValueError, ["scale"]),
]


@pytest.mark.parametrize("case", PADDED_CASES, ids=[c[0] for c in PADDED_CASES])
def test_bad_padded_inputs_raise_and_are_reported(case):
    _, args, kwargs, exc, words = case
    with pytest.raises(exc) as info:
        flash_attention(*args, **kwargs)
    for word in words:
        assert word in str(info.value)
    reasons = triton_unsupported_reasons(*args, **{k: v for k, v in kwargs.items() if k != "seed"})
    if "seed" not in kwargs:
        assert str(info.value) in reasons


@pytest.mark.parametrize("lengths", [[5, 1], [-1, 2]])
def test_key_lengths_outside_range_raise(lengths):
    q, k, v = qkv()
    with pytest.raises(ValueError, match="key_lengths must lie in"):
        flash_attention(q, k, v, key_lengths=torch.tensor(lengths, device=DEVICE))


def test_bad_block_overrides_raise():
    with pytest.raises(ValueError, match="block_m"):
        flash_attention(*qkv(), block_m=24)
    with pytest.raises(TypeError, match="block_n"):
        flash_attention(*qkv(), block_n=16.0)


def _cu(values, dtype=torch.int32):
    return torch.tensor(values, dtype=dtype, device=DEVICE)


VARLEN_CASES = [
    ("q-4d", (t(1, 7, 2, D), t(7, 2, D), t(7, 2, D), _cu([0, 7]), _cu([0, 7]), 7, 7), ValueError, "q"),
    (
        "cu-int64",
        (t(7, 2, D), t(7, 2, D), t(7, 2, D), _cu([0, 7], torch.int64), _cu([0, 7]), 7, 7),
        TypeError,
        "cu_seqlens_q",
    ),
    (
        "cu-shapes",
        (t(7, 2, D), t(7, 2, D), t(7, 2, D), _cu([0, 3, 7]), _cu([0, 7]), 7, 7),
        ValueError,
        "cu_seqlens_k",
    ),
    ("heads", (t(7, 2, D), t(7, 3, D), t(7, 3, D), _cu([0, 7]), _cu([0, 7]), 7, 7), ValueError, "share H"),
    (
        "max-negative",
        (t(7, 2, D), t(7, 2, D), t(7, 2, D), _cu([0, 7]), _cu([0, 7]), -1, 7),
        ValueError,
        "max_seqlen_q",
    ),
    (
        "max-type",
        (t(7, 2, D), t(7, 2, D), t(7, 2, D), _cu([0, 7]), _cu([0, 7]), 7, 7.0),
        TypeError,
        "max_seqlen_k",
    ),
    (
        "decreasing",
        (t(7, 2, D), t(7, 2, D), t(7, 2, D), _cu([0, 5, 3]), _cu([0, 3, 7]), 7, 7),
        ValueError,
        "cu_seqlens_q must be non-decreasing, got cu_seqlens_q[2] = 3 < cu_seqlens_q[1] = 5",
    ),
    (
        "negative-start",
        (t(7, 2, D), t(7, 2, D), t(7, 2, D), _cu([0, 7]), _cu([-2, 7]), 7, 9),
        ValueError,
        "cu_seqlens_k[0] must be >= 0, got -2",
    ),
    (
        "beyond-tokens",
        (t(7, 2, D), t(7, 2, D), t(7, 2, D), _cu([0, 7]), _cu([0, 9]), 7, 9),
        ValueError,
        "cu_seqlens_k[-1] = 9 but k has 7 rows; it must be <= 7",
    ),
    (
        "over-max",
        (t(7, 2, D), t(7, 2, D), t(7, 2, D), _cu([0, 7]), _cu([0, 7]), 6, 7),
        ValueError,
        "max_seqlen_q = 6 but sequence 0 has 7 rows (cu_seqlens_q[1] - cu_seqlens_q[0])",
    ),
]


@pytest.mark.parametrize("case", VARLEN_CASES, ids=[c[0] for c in VARLEN_CASES])
def test_bad_varlen_inputs_raise(case):
    _, args, exc, words = case
    with pytest.raises(exc) as info:
        flash_attention_varlen(*args)
    assert words in str(info.value)


def test_varlen_rows_outside_every_sequence_are_zero():
    """The kernel's own contract is looser than the dispatcher's: ``cu[-1] < T`` leaves trailing rows."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(7, 2, D, generator=g).to(DEVICE) for _ in range(3))
    cu = _cu([0, 2, 5])
    out = flash_attention_varlen(q, k, v, cu, cu, 3, 3)
    ref = flash_attention_varlen(q[:5], k[:5], v[:5], cu, cu, 3, 3)
    torch.testing.assert_close(out[:5], ref)
    assert torch.equal(out[5:], torch.zeros_like(out[5:]))


_UNCHECKED_SCRIPT = """
import torch
from maskmm.kernels.attention import flash_attention_varlen

dev = {device!r}
g = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(9, 2, 16, generator=g).to(dev).requires_grad_() for _ in range(3))


def cu(*values):
    return torch.tensor(values, dtype=torch.int32, device=dev)


for cu_q, cu_k, max_q, max_k in [
    (cu(0, 4, 40), cu(0, 4, 9), 36, 8),  # past the last row
    (cu(-20, 5, 9), cu(3, 1, 9), 25, 8),  # before the first row; decreasing
    (cu(0, 9, 9), cu(0, 2**31 - 1, 9), 16, 16),  # far past the last row
    (cu(0, 9, 9), cu(0, 9, 9), 2, 2),  # sequences longer than max_seqlen
]:
    out = flash_attention_varlen(
        q, k, v, cu_q, cu_k, max_q, max_k, check_values=False, block_m=16, block_n=16
    )
    out.sum().backward()
    assert out.shape == q.shape and torch.isfinite(out).all()
print("unchecked calls finished")
"""


def test_unchecked_bad_offsets_never_leave_the_tensors():
    """``check_values=False`` with offsets outside ``q`` / ``k``: the kernels clamp every sequence into
    the tensors' rows. Run in a fresh interpreter, because an out-of-bounds access would corrupt the heap
    (Triton interpreter) or fault (CUDA) and take the test process with it."""
    script = _UNCHECKED_SCRIPT.format(device=DEVICE)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ), timeout=300
    )
    assert proc.returncode == 0, f"exit code {proc.returncode}: {proc.stdout[-2000:]} {proc.stderr[-3000:]}"
    assert "unchecked calls finished" in proc.stdout


def test_good_inputs_have_no_reasons():
    q, k, v = qkv()
    kv = torch.ones(B, LK, dtype=torch.bool, device=DEVICE)
    assert triton_unsupported_reasons(q, k, v, key_valid=kv, dropout_p=0.1) == []
    packed = t(7, 2, D)
    cu = _cu([0, 3, 7])
    assert (
        triton_unsupported_reasons(
            packed, packed, packed, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=4, max_seqlen_k=4
        )
        == []
    )
    reasons = triton_unsupported_reasons(
        packed, packed, packed, cu_seqlens_q=cu.long(), cu_seqlens_k=cu, max_seqlen_q=4, max_seqlen_k=4
    )
    assert any("cu_seqlens_q" in r for r in reasons)


def test_all_reasons_are_listed():
    q = t(1, 1, 3, 160, dtype=torch.float64)
    k = t(1, 1, 3, 160, dtype=torch.float64)
    reasons = triton_unsupported_reasons(q, k, k, dropout_p=2.0)
    assert any("float64" in r for r in reasons)
    assert len(reasons) >= 3


@pytest.mark.skipif(DEVICE != "cpu", reason="checks the CPU path without the interpreter")
def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, k, v = qkv()
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        flash_attention(q, k, v)
    assert any("TRITON_INTERPRET=1" in r for r in triton_unsupported_reasons(q, k, v))
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        attention_dropout_mask(0, 1, 1, 2, 2, 0.5, "cpu")


@pytest.mark.parametrize(
    ("args", "exc", "word"),
    [
        ((-1, 1, 1, 2, 2, 0.5), ValueError, "seed"),
        ((0, 1, 1, 2, 2, 1.0), ValueError, "dropout_p"),
        ((0, 1, -1, 2, 2, 0.5), ValueError, "heads"),
        ((0, 1, 1, 2.0, 2, 0.5), TypeError, "lq"),
    ],
)
def test_bad_dropout_mask_arguments(args, exc, word):
    with pytest.raises(exc, match=word):
        attention_dropout_mask(*args, DEVICE)
