"""latent_regression_loss against a plain float64 reference on the masked rows."""

from __future__ import annotations

import math

import pytest
import torch

from maskmm.losses import LatentRegressionLoss, latent_regression_loss

TOL = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 5e-2}


def _reference(pred, target, mask, kind, scale_by_dim, beta):
    p = pred[mask].double()
    t = target[mask].double()
    d = pred.shape[-1]
    if p.shape[0] == 0:
        return p.sum() * 0.0
    if kind == "cosine":
        cos = (p * t).sum(-1) / (p.norm(dim=-1) * t.norm(dim=-1))
        per = 1.0 - cos
    else:
        diff = p - t
        if kind == "mse":
            elem = diff**2
        else:
            a = diff.abs()
            elem = torch.where(a < beta, 0.5 * diff**2 / beta, a - 0.5 * beta) if beta > 0 else a
        per = elem.sum(-1) * (1.0 / math.sqrt(d) if scale_by_dim else 1.0 / d)
    return per.mean()


def _inputs(dtype=torch.float32, b=3, n=7, d=13, p_mask=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(b, n, d, generator=g).to(dtype)
    target = torch.randn(b, n, d, generator=g).to(dtype)
    mask = torch.rand(b, n, generator=g) < p_mask
    return pred, target, mask


@pytest.mark.parametrize(
    ("kind", "scale_by_dim", "beta"),
    [
        ("mse", True, 1.0),
        ("mse", False, 1.0),
        ("smooth_l1", True, 0.5),
        ("smooth_l1", False, 0.0),
        ("cosine", True, 1.0),
    ],
)
def test_value_and_grad_match_reference_float64(kind, scale_by_dim, beta) -> None:
    pred, target, mask = _inputs(torch.float64)
    pred.requires_grad_(True)
    out = latent_regression_loss(pred, target, mask, kind=kind, scale_by_dim=scale_by_dim, beta=beta)
    assert out.loss.dtype == torch.float64  # fp64 inputs accumulate in fp64
    (g,) = torch.autograd.grad(out.loss, pred)
    ref_pred = pred.detach().clone().requires_grad_(True)
    ref = _reference(ref_pred, target, mask, kind, scale_by_dim, beta)
    (g_ref,) = torch.autograd.grad(ref, ref_pred)
    torch.testing.assert_close(out.loss.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g.double(), g_ref, rtol=1e-4, atol=1e-6)
    assert g[~mask].abs().max() == 0  # unmasked positions get no gradient
    assert out.stats["num_masked"] == mask.sum()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["smooth_l1", "cosine"])
def test_low_precision_forward_close_to_reference(dtype, kind) -> None:
    pred, target, mask = _inputs(dtype, b=2, n=9, d=31)
    out = latent_regression_loss(pred, target, mask, kind=kind)
    assert out.loss.dtype == torch.float32
    ref = _reference(pred, target, mask, kind, True, 1.0)
    torch.testing.assert_close(out.loss.double(), ref, rtol=TOL[dtype], atol=TOL[dtype])


def test_variance_stats_match_reference() -> None:
    pred, target, mask = _inputs(b=4, n=11, d=5, p_mask=0.6)
    out = latent_regression_loss(pred, target, mask)
    ref_pv = pred[mask].double().var(dim=0, unbiased=True).mean()
    ref_tv = target[mask].double().var(dim=0, unbiased=True).mean()
    torch.testing.assert_close(out.stats["pred_var"].double(), ref_pv, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.stats["target_var"].double(), ref_tv, rtol=1e-5, atol=1e-6)
    collapsed = latent_regression_loss(torch.ones_like(pred), target, mask)
    assert collapsed.stats["pred_var"] == 0
    assert all(not v.requires_grad and v.dtype == torch.float32 for v in out.stats.values())


def test_target_is_detached_by_default() -> None:
    pred, target, mask = _inputs()
    target.requires_grad_(True)
    pred.requires_grad_(True)
    latent_regression_loss(pred, target, mask, kind="mse").loss.backward()
    assert target.grad is None
    latent_regression_loss(pred, target, mask, kind="mse", detach_target=False).loss.backward()
    assert target.grad is not None and target.grad[mask].abs().sum() > 0


@pytest.mark.parametrize("kind", ["smooth_l1", "mse", "cosine"])
def test_no_masked_position_gives_finite_zero_with_zero_grad(kind) -> None:
    pred, target, _ = _inputs()
    pred[0, 0] = float("nan")  # unmasked garbage must not leak into the loss
    pred.requires_grad_(True)
    mask = torch.zeros(pred.shape[:2], dtype=torch.bool)
    out = LatentRegressionLoss(kind)(pred, target, mask)
    assert out.loss.item() == 0.0 and out.loss.requires_grad
    out.loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))
    assert out.stats["num_masked"] == 0 and torch.isfinite(out.stats["pred_var"])


def test_single_masked_token_is_defined() -> None:
    pred, target, _ = _inputs()
    mask = torch.zeros(pred.shape[:2], dtype=torch.bool)
    mask[1, 3] = True
    out = latent_regression_loss(pred, target, mask, kind="mse")
    ref = _reference(pred, target, mask, "mse", True, 1.0)
    torch.testing.assert_close(out.loss.double(), ref)
    assert out.stats["pred_var"] == 0  # variance of a single token is reported as 0


def test_bad_inputs_raise_naming_the_argument() -> None:
    pred, target, mask = _inputs()
    with pytest.raises(ValueError, match="target"):
        latent_regression_loss(pred, target[:, :-1], mask)
    with pytest.raises(TypeError, match="mask"):
        latent_regression_loss(pred, target, mask.float())
    with pytest.raises(ValueError, match="kind"):
        latent_regression_loss(pred, target, mask, kind="l2")
    with pytest.raises(ValueError, match="beta"):
        latent_regression_loss(pred, target, mask, beta=-1.0)


def test_module_validates_its_configuration() -> None:
    with pytest.raises(ValueError, match="beta"):
        LatentRegressionLoss(beta=-1.0)
    with pytest.raises(ValueError, match="kind"):
        LatentRegressionLoss("huber")
    with pytest.raises(TypeError, match="scale_by_dim"):
        LatentRegressionLoss(scale_by_dim=None)  # type: ignore[arg-type]
