"""Prototype targets: sharpening/centring, projection, EMA center, against float64 references."""

from __future__ import annotations

import pytest
import torch

from maskmm.targets import PrototypeProjection, PrototypeTargets, sharpen_and_center


def _ref_softmax(z: torch.Tensor) -> torch.Tensor:
    e = torch.exp(z - z.max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float16, 1e-6), (torch.bfloat16, 1e-6)])
def test_sharpen_and_center(dtype: torch.dtype, tol: float) -> None:
    gen = torch.Generator().manual_seed(16)
    logits = torch.randn(3, 5, 7, generator=gen).to(dtype).requires_grad_()
    center = torch.randn(7, generator=gen)
    out = sharpen_and_center(logits, center, 0.07)
    want = _ref_softmax((logits.detach().double() - center.double()) / 0.07)
    assert out.dtype == torch.float32 and not out.requires_grad
    torch.testing.assert_close(out.double(), want, rtol=tol, atol=tol)
    torch.testing.assert_close(out.sum(-1), torch.ones(3, 5))
    plain = sharpen_and_center(logits, None, 1.0)
    torch.testing.assert_close(plain.double(), _ref_softmax(logits.detach().double()), rtol=tol, atol=tol)


@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_projection_values_and_grads(norm_last_layer: bool) -> None:
    gen = torch.Generator().manual_seed(17)
    proj = PrototypeProjection(9, 13, norm_last_layer=norm_last_layer).double()
    with torch.no_grad():
        proj.weight_g.copy_(torch.rand(13, generator=gen, dtype=torch.float64) + 0.5)
    for shape in [(4, 9), (2, 5, 9)]:
        x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
        x_ref = x.detach().clone().requires_grad_()
        v = proj.weight_v.detach().clone().requires_grad_()
        gain = proj.weight_g.detach().clone().requires_grad_()
        out = proj(x)
        xn = x_ref / torch.sqrt((x_ref * x_ref).sum(-1, keepdim=True))
        w = gain[:, None] * v / torch.sqrt((v * v).sum(-1, keepdim=True))
        want = torch.einsum("...d,kd->...k", xn, w)
        torch.testing.assert_close(out, want)
        g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
        proj.zero_grad()
        (out * g).sum().backward()
        (want * g).sum().backward()
        torch.testing.assert_close(x.grad, x_ref.grad)
        torch.testing.assert_close(proj.weight_v.grad, v.grad)
        if norm_last_layer:
            assert proj.weight_g.grad is None and not proj.weight_g.requires_grad
        else:
            torch.testing.assert_close(proj.weight_g.grad, gain.grad)


def test_projection_init_is_seeded() -> None:
    a, b = PrototypeProjection(5, 7), PrototypeProjection(5, 7)
    a.reset_parameters(torch.Generator().manual_seed(3))
    b.reset_parameters(torch.Generator().manual_seed(3))
    assert torch.equal(a.weight_v, b.weight_v) and torch.equal(a.weight_g, torch.ones(7))
    b.reset_parameters(torch.Generator().manual_seed(4))
    assert not torch.equal(a.weight_v, b.weight_v)
    assert a.weight_v.abs().max() <= 0.04


def test_update_center_matches_reference_loop() -> None:
    gen = torch.Generator().manual_seed(18)
    pt = PrototypeTargets(6, teacher_temp=0.05, center_momentum=0.8, all_reduce=None)
    ref = torch.zeros(6, dtype=torch.float64)
    for step in range(4):
        logits = torch.randn(3, 5, 6, generator=gen)
        mask = torch.rand(3, 5, generator=gen) < 0.5 if step % 2 else None
        pt.update_center(logits, mask)
        rows = logits.double().reshape(-1, 6)
        if mask is not None:
            rows = rows[mask.reshape(-1)]
        ref = 0.8 * ref + 0.2 * rows.mean(0)
        torch.testing.assert_close(pt.center.double(), ref, rtol=1e-6, atol=1e-6)
    before = pt.center.clone()
    pt.update_center(torch.randn(2, 6), torch.zeros(2, dtype=torch.bool))  # nothing selected
    assert torch.equal(pt.center, before)
    probs = pt(logits)
    torch.testing.assert_close(
        probs.double(), _ref_softmax((logits.double() - ref) / 0.05), rtol=1e-5, atol=1e-6
    )
    assert "center" in pt.state_dict()


def test_all_reduce_hook_gives_the_global_mean() -> None:
    gen = torch.Generator().manual_seed(19)
    mine, other = torch.randn(4, 5, generator=gen), torch.randn(7, 5, generator=gen)

    def fake_all_reduce(t: torch.Tensor) -> None:  # adds another rank's (sum, count)
        t.add_(torch.cat([other.sum(0), torch.tensor([7.0])]))

    pt = PrototypeTargets(5, center_momentum=0.5, all_reduce=fake_all_reduce)
    pt.update_center(mine)
    want = 0.5 * torch.cat([mine, other]).double().mean(0)
    torch.testing.assert_close(pt.center.double(), want, rtol=1e-6, atol=1e-6)


def test_shared_projection_targets() -> None:
    pt = PrototypeTargets(8, dim=4, teacher_temp=0.1, all_reduce="auto")
    feats = torch.randn(2, 3, 4, requires_grad=True)
    out = pt.from_features(feats)
    assert not out.requires_grad and out.shape == (2, 3, 8)
    with torch.no_grad():
        torch.testing.assert_close(out, pt(pt.projection(feats)))
    pt.update_center(pt.projection(feats).detach())  # single process: "auto" stays local
    assert torch.isfinite(pt.center).all() and pt.center.abs().sum() > 0
    assert pt.projection(feats).requires_grad  # the student path keeps gradients


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: sharpen_and_center(torch.randn(2, 4), torch.zeros(3), 0.1), ValueError, "center"),
        (lambda: sharpen_and_center(torch.randn(2, 4), None, 0.0), ValueError, "temperature"),
        (lambda: sharpen_and_center(torch.ones(2, 4, dtype=torch.long), None, 0.1), TypeError, "logits"),
        (lambda: PrototypeTargets(4)(torch.randn(2, 5)), ValueError, "teacher_logits"),
        (lambda: PrototypeTargets(4, center_momentum=1.5), ValueError, "center_momentum"),
        (lambda: PrototypeTargets(0), ValueError, "num_codes"),
        (lambda: PrototypeTargets(4).from_features(torch.randn(2, 3)), TypeError, "dim"),
        (
            lambda: PrototypeTargets(4).update_center(torch.randn(2, 4), torch.ones(3, dtype=torch.bool)),
            ValueError,
            "mask",
        ),
        (lambda: PrototypeProjection(3, 4)(torch.randn(2, 5)), ValueError, "x"),
        (lambda: PrototypeTargets(4, all_reduce="nccl"), TypeError, "all_reduce"),
    ],
)
def test_bad_inputs(call, exc, match) -> None:
    with pytest.raises(exc, match=match):
        call()
