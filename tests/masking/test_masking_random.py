from __future__ import annotations

import math

import pytest
import torch

from maskmm.masking import RandomPatchMasker, random_patch_masking

# Independent table of the documented rule: round half up, at least one patch left visible.
EXPECTED = [
    # (N, ratio, n_mask)
    (1, 0.0, 0),
    (1, 0.5, 0),
    (1, 0.99, 0),
    (2, 0.25, 1),  # 0.5 rounds up
    (2, 0.75, 1),  # 1.5 -> 2, capped at N - 1
    (7, 0.0, 0),
    (7, 0.5, 4),  # 3.5 -> 4
    (10, 0.15, 2),  # 1.5 -> 2
    (10, 0.25, 3),  # 2.5 -> 3
    (13, 0.4, 5),  # 5.2 -> 5
    (13, 0.97, 12),  # 12.61 -> 13, capped at 12
    (196, 0.75, 147),
    (196, 0.6, 118),  # 117.6 -> 118
]


@pytest.mark.parametrize(("n", "ratio", "n_mask"), EXPECTED)
def test_exact_counts_and_indices(n: int, ratio: float, n_mask: int) -> None:
    g = torch.Generator().manual_seed(n)
    pm = random_patch_masking(6, n, ratio, generator=g)
    assert pm.mask.dtype == torch.bool and pm.mask.shape == (6, n)
    assert pm.mask.sum(dim=1).tolist() == [n_mask] * 6
    assert pm.ids_keep.shape == (6, n - n_mask) and pm.ids_restore.shape == (6, n)
    for b in range(6):
        visible = [i for i in range(n) if not pm.mask[b, i]]
        assert pm.ids_keep[b].tolist() == visible  # ascending
        order = visible + [i for i in range(n) if pm.mask[b, i]]
        assert [order[int(j)] for j in pm.ids_restore[b]] == list(range(n))


def test_empty_batch() -> None:
    pm = random_patch_masking(0, 9, 0.5)
    assert pm.mask.shape == (0, 9) and pm.ids_keep.shape == (0, 4)


def test_determinism_and_seed_dependence() -> None:
    a = random_patch_masking(4, 50, 0.5, generator=torch.Generator().manual_seed(7))
    b = random_patch_masking(4, 50, 0.5, generator=torch.Generator().manual_seed(7))
    c = random_patch_masking(4, 50, 0.5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.mask, b.mask) and torch.equal(a.ids_restore, b.ids_restore)
    assert not torch.equal(a.mask, c.mask)
    # rows of one batch differ from each other
    assert not all(torch.equal(a.mask[0], a.mask[i]) for i in range(1, 4))


def test_each_position_equally_likely() -> None:
    draws, n, ratio = 20000, 13, 0.4
    pm = random_patch_masking(draws, n, ratio, generator=torch.Generator().manual_seed(9))
    p = 5 / 13
    freq = pm.mask.double().sum(dim=0)
    sigma = math.sqrt(draws * p * (1 - p))
    assert (freq - draws * p).abs().max() < 5 * sigma


def test_module_and_mask_images() -> None:
    masker = RandomPatchMasker(0.75, patch_size=4)
    images = torch.randn(3, 3, 12, 20)
    out = masker.mask_images(images, generator=torch.Generator().manual_seed(0))
    assert out.images is images and out.pixel_mask is None
    assert out.mask.shape == (3, 15) and out.mask.sum(1).tolist() == [11] * 3
    assert torch.equal(out.patches.mask, out.mask)
    pm = masker(2, 8, generator=torch.Generator().manual_seed(0))
    assert pm.mask.sum(1).tolist() == [6, 6]
    assert "ratio=0.75" in repr(masker)


def test_bad_inputs_name_the_argument() -> None:
    for ratio in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="ratio"):
            random_patch_masking(2, 5, ratio)
    with pytest.raises(TypeError, match="ratio"):
        random_patch_masking(2, 5, "0.5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_patches"):
        random_patch_masking(2, 0, 0.5)
    with pytest.raises(TypeError, match="num_patches"):
        random_patch_masking(2, 5.0, 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch"):
        random_patch_masking(-1, 5, 0.5)
    with pytest.raises(ValueError, match="generator"):
        random_patch_masking(2, 5, 0.5, device="meta", generator=torch.Generator())
    with pytest.raises(TypeError, match="generator"):
        random_patch_masking(2, 5, 0.5, generator=7)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ratio"):
        RandomPatchMasker(1.0)
    with pytest.raises(ValueError, match="patch_size"):
        RandomPatchMasker(0.5, patch_size=5).mask_images(torch.randn(1, 3, 12, 12))
