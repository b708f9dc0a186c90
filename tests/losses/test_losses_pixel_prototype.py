"""Pixel reconstruction and prototype agreement against plain float64 references."""

from __future__ import annotations

import pytest
import torch

from maskmm.losses import PixelReconstructionLoss, PrototypeLoss, pixel_reconstruction_loss, prototype_loss


@pytest.mark.parametrize("kind", ["l1", "mse"])
@pytest.mark.parametrize("normalize_target", [False, True])
def test_patch_layout_value_and_grad(kind, normalize_target) -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 7, 12, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(3, 7, 12, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 7, generator=g) < 0.5
    out = pixel_reconstruction_loss(pred, target, mask, kind=kind, normalize_target=normalize_target)
    (gr,) = torch.autograd.grad(out.loss, pred)
    t = target[mask]
    if normalize_target:
        t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
    d = pred[mask] - t
    ref = d.abs().mean() if kind == "l1" else (d**2).mean()
    (g_ref,) = torch.autograd.grad(ref, pred)
    torch.testing.assert_close(out.loss.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gr.double(), g_ref, rtol=1e-4, atol=1e-7)
    assert out.stats["num_masked"] == mask.sum()


@pytest.mark.parametrize("mask_shape", ["bhw", "b1hw"])
def test_pixel_layout_value_and_grad(mask_shape) -> None:
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(2, 3, 9, 5, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 3, 9, 5, generator=g, dtype=torch.float64)
    mask = torch.rand(2, 9, 5, generator=g) < 0.6
    m = mask if mask_shape == "bhw" else mask[:, None]
    out = PixelReconstructionLoss("l1", layout="pixel")(pred, target, m)
    (gr,) = torch.autograd.grad(out.loss, pred)
    sel = mask[:, None].expand_as(pred)
    ref = (pred[sel] - target[sel]).abs().mean()
    (g_ref,) = torch.autograd.grad(ref, pred)
    torch.testing.assert_close(out.loss.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gr.double(), g_ref, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float16, 1e-2), (torch.bfloat16, 3e-2)])
def test_pixel_low_precision(dtype, tol) -> None:
    pred = torch.randn(2, 5, 16).to(dtype)
    target = torch.randn(2, 5, 16).to(dtype)
    mask = torch.tensor([[True, False, True, True, False], [False, False, True, False, False]])
    out = pixel_reconstruction_loss(pred, target, mask, kind="mse")
    ref = ((pred[mask].double() - target[mask].double()) ** 2).mean()
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(out.loss.double(), ref, rtol=tol, atol=tol)


def test_pixel_nothing_masked_is_zero_with_zero_grad() -> None:
    pred = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 3, 4, 4), float("inf"))  # unscored garbage must not leak
    out = pixel_reconstruction_loss(pred, target, torch.zeros(2, 4, 4, dtype=torch.bool), layout="pixel")
    out.loss.backward()
    assert out.loss.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))


def _proto_ref(s, q, mask, tau_s):
    logp = torch.log_softmax(s.double() / tau_s, -1)
    per = -(q.double() * logp).sum(-1)
    return per[mask].mean() if mask is not None else per.mean()


def test_prototype_local_masked_value_and_grad() -> None:
    g = torch.Generator().manual_seed(2)
    s = torch.randn(3, 7, 11, generator=g, dtype=torch.float64, requires_grad=True)
    q = torch.softmax(torch.randn(3, 7, 11, generator=g, dtype=torch.float64) / 0.04, -1)
    mask = torch.rand(3, 7, generator=g) < 0.5
    out = PrototypeLoss(0.1)(s, q, mask)
    (gr,) = torch.autograd.grad(out.loss, s)
    ref = _proto_ref(s, q, mask, 0.1)
    (g_ref,) = torch.autograd.grad(ref, s)
    torch.testing.assert_close(out.loss.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gr.double(), g_ref, rtol=1e-4, atol=1e-7)
    assert out.stats["num_scored"] == mask.sum()
    ent = -(q * q.log()).sum(-1)[mask].mean()
    torch.testing.assert_close(out.stats["teacher_entropy"].double(), ent, rtol=1e-5, atol=1e-6)


def test_prototype_global_and_teacher_logits() -> None:
    g = torch.Generator().manual_seed(3)
    s = torch.randn(5, 13, generator=g)
    t = torch.randn(5, 13, generator=g)
    out = prototype_loss(s, t, student_temperature=0.2, teacher_temperature=0.05)
    ref = _proto_ref(s, torch.softmax(t.double() / 0.05, -1), None, 0.2)
    torch.testing.assert_close(out.loss.double(), ref, rtol=1e-5, atol=1e-6)
    same = prototype_loss(t, torch.softmax(t / 0.1, -1))
    assert same.stats["agreement"] == 1.0
    low = prototype_loss(s.bfloat16(), torch.softmax(t, -1).bfloat16())
    torch.testing.assert_close(
        low.loss.double(),
        _proto_ref(s.bfloat16(), torch.softmax(t, -1).bfloat16(), None, 0.1),
        rtol=3e-2,
        atol=3e-2,
    )


def test_prototype_nothing_masked_is_zero() -> None:
    s = torch.randn(2, 4, 6, requires_grad=True)
    out = prototype_loss(s, torch.softmax(torch.randn(2, 4, 6), -1), torch.zeros(2, 4, dtype=torch.bool))
    out.loss.backward()
    assert out.loss.item() == 0.0 and torch.equal(s.grad, torch.zeros_like(s))


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="mask"):
        pixel_reconstruction_loss(
            torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.ones(2, 4, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match="layout"):
        pixel_reconstruction_loss(
            torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), layout="grid"
        )
    with pytest.raises(ValueError, match="teacher_probs"):
        prototype_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="student_temperature"):
        prototype_loss(torch.randn(2, 4), torch.randn(2, 4), student_temperature=0.0)


def test_bad_config_raises_naming_the_argument() -> None:
    with pytest.raises(ValueError, match="teacher_temperature"):
        PrototypeLoss(0.1, 0.0)
    with pytest.raises(TypeError, match="student_temperature"):
        prototype_loss(torch.randn(2, 4), torch.randn(2, 4), student_temperature="0.1")
    with pytest.raises(ValueError, match="normalize_target"):
        PixelReconstructionLoss(layout="pixel", normalize_target=True)
    with pytest.raises(ValueError, match="kind"):
        PixelReconstructionLoss("huber")
    with pytest.raises(ValueError, match="eps"):
        pixel_reconstruction_loss(
            torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), eps=0.0
        )
