"""patchify / unpatchify / pixel_targets against loop references written here."""

from __future__ import annotations

import pytest
import torch

from maskmm.targets import PixelTargets, patchify, pixel_targets, unpatchify


def _ref_patchify(img: torch.Tensor, p: int) -> torch.Tensor:
    b, _, hh, ww = img.shape
    rows = []
    for i in range(hh // p):
        for j in range(ww // p):
            cell = img[:, :, i * p : (i + 1) * p, j * p : (j + 1) * p]  # [B, C, p, p]
            rows.append(torch.stack([cell[:, :, r, s] for r in range(p) for s in range(p)], 1).reshape(b, -1))
    return torch.stack(rows, 1)  # within a patch: (row, col, channel)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_patchify_matches_reference_values_and_grads(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(13)
    img = torch.randn(2, 3, 15, 9, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    ref_img = img.detach().double().requires_grad_()
    out = patchify(img, 3)
    want = _ref_patchify(ref_img, 3)
    assert out.shape == (2, 15, 27) and out.dtype == dtype
    torch.testing.assert_close(out.double(), want, rtol=0, atol=0)
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    (out.double() * g).sum().backward()
    (want * g).sum().backward()
    tol = 0 if dtype == torch.float64 else 1e-2
    torch.testing.assert_close(img.grad.double(), ref_img.grad, rtol=tol, atol=tol)


def test_unpatchify_is_exact_inverse() -> None:
    gen = torch.Generator().manual_seed(14)
    img = torch.randn(3, 2, 10, 14, generator=gen)
    assert torch.equal(unpatchify(patchify(img, 2), 2, grid=(5, 7)), img)
    rows = torch.randn(2, 16, 4 * 4 * 3, generator=gen)
    assert torch.equal(patchify(unpatchify(rows, 4), 4), rows)
    assert unpatchify(rows, 4).shape == (2, 3, 16, 16)


@pytest.mark.parametrize("unbiased", [True, False])
def test_normalized_pixel_targets(unbiased: bool) -> None:
    gen = torch.Generator().manual_seed(15)
    img = torch.rand(2, 3, 8, 12, generator=gen)
    img[0, :, :4, :4] = 0.5  # a constant patch
    out = pixel_targets(img, 4, eps=1e-6, unbiased=unbiased)
    x = _ref_patchify(img.double(), 4)
    n = x.shape[-1]
    mu = x.sum(-1, keepdim=True) / n
    var = ((x - mu) ** 2).sum(-1, keepdim=True) / (n - 1 if unbiased else n)
    want = (x - mu) / torch.sqrt(var + 1e-6)
    assert out.dtype == torch.float32 and not out.requires_grad
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)
    assert torch.equal(out[0, 0], torch.zeros(48))
    raw = PixelTargets(4, normalize=False)(img.half())
    torch.testing.assert_close(raw.double(), _ref_patchify(img.half().double(), 4), rtol=0, atol=0)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: patchify(torch.randn(1, 3, 10, 8), 4), ValueError, "multiples of patch"),
        (lambda: patchify(torch.randn(3, 8, 8), 4), ValueError, "images"),
        (lambda: patchify(torch.randn(1, 3, 8, 8), 0), ValueError, "patch"),
        (lambda: unpatchify(torch.randn(1, 6, 12), 2), ValueError, "grid"),
        (lambda: unpatchify(torch.randn(1, 6, 12), 2, grid=(2, 2)), ValueError, "grid"),
        (lambda: unpatchify(torch.randn(1, 4, 10), 2), ValueError, "patch"),
        (lambda: pixel_targets(torch.ones(1, 1, 2, 2, dtype=torch.long), 2), TypeError, "images"),
        (lambda: pixel_targets(torch.rand(1, 1, 2, 2), 1), ValueError, "unbiased"),
        (lambda: pixel_targets(torch.rand(1, 1, 2, 2), 2, eps=-1.0), ValueError, "eps"),
    ],
)
def test_bad_inputs(call, exc, match) -> None:
    with pytest.raises(exc, match=match):
        call()
