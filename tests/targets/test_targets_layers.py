"""top_k_layer_targets against a float64 reference written here."""

from __future__ import annotations

import pytest
import torch

from maskmm.targets import TopKLayerTargets, top_k_layer_targets

TOL = {torch.float32: 1e-5, torch.float16: 1e-5, torch.bfloat16: 1e-5}


def _ref_norm(x: torch.Tensor, kind: str, eps: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    x = x.double()
    out = torch.zeros_like(x)
    b, length, _ = x.shape
    for i in range(b):
        rows = range(length) if valid is None else [t for t in range(length) if bool(valid[i, t])]
        rows = list(rows)
        if not rows:
            continue
        xi = x[i, rows]  # [n, D]
        if kind == "instance":
            mu = xi.sum(0) / len(rows)
            var = ((xi - mu) ** 2).sum(0) / len(rows)
            yi = (xi - mu) / torch.sqrt(var + eps)
        elif kind == "layer":
            mu = xi.mean(-1, keepdim=True)
            var = ((xi - mu) ** 2).mean(-1, keepdim=True)
            yi = (xi - mu) / torch.sqrt(var + eps)
        else:
            yi = xi
        out[i, rows] = yi
    return out


def _reference(layers, k, layer_norm, final_norm, eps, valid=None):
    top = layers[len(layers) - k :]
    avg = sum(_ref_norm(x, layer_norm, eps, valid) for x in top) / k
    return _ref_norm(avg, final_norm, eps, valid) if final_norm != "none" else avg


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "layer_norm,final_norm",
    [("instance", "none"), ("layer", "none"), ("none", "layer"), ("instance", "instance")],
)
def test_matches_reference(dtype: torch.dtype, layer_norm: str, final_norm: str) -> None:
    gen = torch.Generator().manual_seed(5)
    layers = [(torch.randn(3, 13, 9, generator=gen) * (i + 1) + i).to(dtype) for i in range(5)]
    out = top_k_layer_targets(layers, 3, layer_norm=layer_norm, final_norm=final_norm, eps=1e-5)
    assert out.dtype == torch.float32 and out.shape == (3, 13, 9)
    want = _reference(layers, 3, layer_norm, final_norm, 1e-5)
    torch.testing.assert_close(out.double(), want, rtol=TOL[dtype], atol=TOL[dtype])


def test_valid_mask_uses_valid_tokens_only() -> None:
    gen = torch.Generator().manual_seed(6)
    layers = [torch.randn(4, 11, 6, generator=gen) for _ in range(3)]
    valid = torch.rand(4, 11, generator=gen) > 0.4
    valid[0] = False  # a row with no valid token
    valid[1] = False
    valid[1, 3] = True  # one valid token
    for ln, fn in [("instance", "none"), ("layer", "instance"), ("none", "none")]:
        out = top_k_layer_targets(layers, 2, layer_norm=ln, final_norm=fn, valid=valid)
        want = _reference(layers, 2, ln, fn, 1e-5, valid)
        torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)
        assert torch.isfinite(out).all()
        assert (out[~valid] == 0).all()


def test_detached_and_input_untouched() -> None:
    x = torch.randn(2, 5, 4, requires_grad=True)
    y = x * 1.0
    out = top_k_layer_targets([y], 1, layer_norm="none")
    assert not out.requires_grad
    torch.testing.assert_close(out, y.detach())
    y.sum().backward()  # the input graph is intact (no in-place change)
    assert x.grad is not None


def test_single_token_instance_norm_is_zero_and_finite() -> None:
    out = top_k_layer_targets([torch.randn(2, 1, 3)], 1)
    assert torch.equal(out, torch.zeros(2, 1, 3))


def test_module_equals_function() -> None:
    layers = [torch.randn(2, 7, 5) for _ in range(4)]
    mod = TopKLayerTargets(2, layer_norm="layer", final_norm="instance", eps=1e-6)
    torch.testing.assert_close(
        mod(layers), top_k_layer_targets(layers, 2, layer_norm="layer", final_norm="instance", eps=1e-6)
    )


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(layers=[], k=1), ValueError, "layers"),
        (dict(layers=torch.randn(2, 3, 4), k=1), TypeError, "layers"),
        (dict(layers=[torch.randn(2, 3, 4)], k=0), ValueError, "k"),
        (dict(layers=[torch.randn(2, 3, 4)], k=2), ValueError, "k"),
        (dict(layers=[torch.randn(2, 3, 4), torch.randn(2, 3, 5)], k=1), ValueError, r"layers\[1\]"),
        (dict(layers=[torch.randn(2, 3)], k=1), ValueError, r"layers\[0\]"),
        (dict(layers=[torch.ones(2, 3, 4, dtype=torch.long)], k=1), TypeError, r"layers\[0\]"),
        (dict(layers=[torch.randn(2, 3, 4)], k=1, layer_norm="batch"), ValueError, "layer_norm"),
        (dict(layers=[torch.randn(2, 3, 4)], k=1, final_norm="x"), ValueError, "final_norm"),
        (dict(layers=[torch.randn(2, 3, 4)], k=1, valid=torch.ones(2, 3)), TypeError, "valid"),
        (
            dict(layers=[torch.randn(2, 3, 4)], k=1, valid=torch.ones(2, 4, dtype=torch.bool)),
            ValueError,
            "valid",
        ),
        (dict(layers=[torch.randn(2, 3, 4)], k=1, eps=0.0), ValueError, "eps"),
    ],
)
def test_bad_inputs(kwargs, exc, match) -> None:
    with pytest.raises(exc, match=match):
        top_k_layer_targets(**kwargs)
