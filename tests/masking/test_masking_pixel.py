from __future__ import annotations

import math

import pytest
import torch

from maskmm.masking import PixelBlockMasker, apply_pixel_mask, pixel_block_masking

CASES = [
    # (H, W, block, patch)
    (64, 96, 32, 16),
    (48, 80, 32, 16),  # clipped last row/column of blocks
    (64, 64, 48, 16),  # clipped, 3 patches per block side
    (32, 48, 16, 16),
    (32, 48, 8, 16),  # blocks smaller than patches
    (30, 45, 5, 15),
]


def _ref_masks(block_mask: torch.Tensor, h: int, w: int, block: int, patch: int):
    """Plain loops: pixel (y, x) is hidden iff its block is; a patch iff all its pixels are."""
    blocks = block_mask.tolist()
    pixel = [[[blk[y // block][x // block] for x in range(w)] for y in range(h)] for blk in blocks]
    gh, gw = h // patch, w // patch
    patch_mask = [
        [
            all(
                img[y][x]
                for y in range(r * patch, (r + 1) * patch)
                for x in range(c * patch, (c + 1) * patch)
            )
            for r in range(gh)
            for c in range(gw)
        ]
        for img in pixel
    ]
    return torch.tensor(pixel, dtype=torch.bool), torch.tensor(patch_mask, dtype=torch.bool)


@pytest.mark.parametrize(("h", "w", "block", "patch"), CASES)
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.6, 0.99])
def test_masks_match_reference_and_counts(h: int, w: int, block: int, patch: int, ratio: float) -> None:
    out = pixel_block_masking(
        3, (h, w), ratio, block_size=block, patch_size=patch, generator=torch.Generator().manual_seed(h + w)
    )
    hb, wb = math.ceil(h / block), math.ceil(w / block)
    expected = min(int(ratio * hb * wb + 0.5), hb * wb - 1)
    assert out.block_mask.shape == (3, hb, wb)
    assert out.block_mask.sum(dim=(1, 2)).tolist() == [expected] * 3
    pixel, patch_mask = _ref_masks(out.block_mask, h, w, block, patch)
    assert torch.equal(out.pixel_mask, pixel)
    assert torch.equal(out.patch_mask, patch_mask)


def test_blocks_equally_likely_and_seeded() -> None:
    draws = 8000
    out = pixel_block_masking(draws, (96, 96), 0.6, block_size=32, generator=torch.Generator().manual_seed(0))
    freq = out.block_mask.view(draws, 9).double().sum(0)
    p = 5 / 9  # round(5.4) = 5 of 9 blocks
    assert (freq - draws * p).abs().max() < 5 * math.sqrt(draws * p * (1 - p))
    a = pixel_block_masking(4, (64, 64), 0.5, block_size=16, generator=torch.Generator().manual_seed(3))
    b = pixel_block_masking(4, (64, 64), 0.5, block_size=16, generator=torch.Generator().manual_seed(3))
    c = pixel_block_masking(4, (64, 64), 0.5, block_size=16, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.pixel_mask, b.pixel_mask) and not torch.equal(a.pixel_mask, c.pixel_mask)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mask_shape", ["bhw", "b1hw"])
def test_apply_pixel_mask_values_and_grads(dtype: torch.dtype, mask_shape: str) -> None:
    g = torch.Generator().manual_seed(1)
    b, c, h, w = 2, 3, 5, 7
    img64 = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    fill64 = torch.randn(c, generator=g, dtype=torch.float64)
    pm = torch.rand(b, h, w, generator=g) < 0.4
    up = torch.randn(b, c, h, w, generator=g, dtype=torch.float64).to(dtype)

    img = img64.to(dtype).requires_grad_(True)
    fill = fill64.clone().requires_grad_(True)
    out = apply_pixel_mask(img, pm if mask_shape == "bhw" else pm.unsqueeze(1), fill)
    out.backward(up)

    # reference: explicit loops over every element, fp64
    ref = torch.empty(b, c, h, w, dtype=torch.float64)
    img_ref = img64.to(dtype).double()
    fill_ref = fill64.to(dtype).double()
    grad_img = torch.zeros(b, c, h, w, dtype=torch.float64)
    grad_fill = torch.zeros(c, dtype=torch.float64)
    for bi in range(b):
        for ci in range(c):
            for y in range(h):
                for x in range(w):
                    if pm[bi, y, x]:
                        ref[bi, ci, y, x] = fill_ref[ci]
                        grad_fill[ci] += up[bi, ci, y, x].double()
                    else:
                        ref[bi, ci, y, x] = img_ref[bi, ci, y, x]
                        grad_img[bi, ci, y, x] = up[bi, ci, y, x].double()
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=0)
    torch.testing.assert_close(img.grad.double(), grad_img, rtol=0, atol=0)
    tol = {torch.float32: 1e-6, torch.float16: 1e-2, torch.bfloat16: 1e-1}.get(dtype, 1e-12)
    torch.testing.assert_close(fill.grad, grad_fill, rtol=tol, atol=tol)


def test_apply_pixel_mask_scalar_fill() -> None:
    img = torch.randn(1, 2, 3, 3)
    pm = torch.zeros(1, 3, 3, dtype=torch.bool)
    pm[0, 1, 2] = True
    out = apply_pixel_mask(img, pm, -1.5)
    assert (out[0, :, 1, 2] == -1.5).all()
    expect = img.clone()
    expect[0, :, 1, 2] = -1.5
    assert torch.equal(out, expect)


def test_module_learnable_fill_gets_gradient() -> None:
    masker = PixelBlockMasker(0.5, block_size=8, patch_size=8, fill=0.25, learnable_fill=True, channels=3)
    images = torch.randn(2, 3, 32, 24)
    out = masker(images, generator=torch.Generator().manual_seed(0))
    assert out.patches is None and out.pixel_mask.shape == (2, 32, 24)
    assert out.mask.shape == (2, 12) and out.mask.sum(1).tolist() == [6, 6]
    hidden = out.pixel_mask.unsqueeze(1).expand_as(images)
    assert torch.all(out.images[hidden] == 0.25)
    assert torch.equal(out.images[~hidden], images[~hidden])
    out.images.sum().backward()
    assert torch.equal(masker.fill.grad, torch.full((3,), 2 * 6 * 64.0))


def test_bad_inputs_name_the_argument() -> None:
    with pytest.raises(ValueError, match="block_size"):
        pixel_block_masking(2, (48, 48), 0.5, block_size=24, patch_size=16)
    with pytest.raises(ValueError, match="image_size"):
        pixel_block_masking(2, (40, 48), 0.5, block_size=32, patch_size=16)
    with pytest.raises(ValueError, match="ratio"):
        pixel_block_masking(2, (64, 64), 1.0)
    with pytest.raises(ValueError, match="generator"):
        pixel_block_masking(2, (64, 64), 0.5, device="meta", generator=torch.Generator())
    with pytest.raises(ValueError, match="pixel_mask"):
        apply_pixel_mask(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="pixel_mask"):
        apply_pixel_mask(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="fill"):
        apply_pixel_mask(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.bool), torch.zeros(4))
    with pytest.raises(TypeError, match="images"):
        apply_pixel_mask(torch.zeros(2, 3, 4, 4, dtype=torch.long), torch.zeros(2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="block_size"):
        PixelBlockMasker(0.5, block_size=12, patch_size=16)
