from __future__ import annotations

import math

import pytest
import torch

from maskmm.masking import TextGuidedPatchMasker, text_guided_patch_masking


def _ref_topk(scores: torch.Tensor, k: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Plain reference: sort by (valid first, score descending, index ascending)."""
    b, n = scores.shape
    out = torch.zeros(b, n, dtype=torch.bool)
    for bi in range(b):
        keys = []
        for i in range(n):
            ok = True if valid is None else bool(valid[bi, i])
            keys.append((0 if ok else 1, -float(scores[bi, i]) if ok else 0.0, i))
        for _, _, i in sorted(keys)[:k]:
            out[bi, i] = True
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("n", "ratio", "k"), [(1, 0.5, 0), (9, 0.0, 0), (13, 0.3, 4), (31, 0.75, 23)])
def test_deterministic_topk_matches_reference(dtype: torch.dtype, n: int, ratio: float, k: int) -> None:
    g = torch.Generator().manual_seed(n)
    scores = torch.randperm(5 * n, generator=g)[:n].to(dtype).expand(3, n).clone()  # distinct, exact in fp16
    scores[1] = scores[1].flip(0)
    pm = text_guided_patch_masking(scores, ratio)
    assert pm.mask.sum(1).tolist() == [k] * 3
    assert torch.equal(pm.mask, _ref_topk(scores.double(), k))
    assert pm.ids_keep.shape == (3, n - k)


def test_ties_go_to_lower_index() -> None:
    pm = text_guided_patch_masking(torch.zeros(2, 10), 0.3)
    assert pm.mask.tolist() == [[True] * 3 + [False] * 7] * 2


def test_invalid_patches_never_chosen() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 17, generator=g)
    valid = torch.rand(6, 17, generator=g) < 0.7
    valid[:, :12] = True  # every row has >= 12 valid patches; n_mask = round(0.5 * 17) = 9
    for t in (0.0, 1.0):
        pm = text_guided_patch_masking(
            scores, 0.5, temperature=t, valid=valid, generator=torch.Generator().manual_seed(1)
        )
        assert pm.mask.sum(1).tolist() == [9] * 6
        assert not bool((pm.mask & ~valid).any())
    assert torch.equal(text_guided_patch_masking(scores, 0.5, valid=valid).mask, _ref_topk(scores, 9, valid))


def test_row_with_too_few_valid_patches() -> None:
    scores = torch.arange(8.0).expand(2, 8).clone()
    valid = torch.ones(2, 8, dtype=torch.bool)
    valid[1, 2:] = False  # only 2 valid patches, n_mask = 4
    pm = text_guided_patch_masking(scores, 0.5, valid=valid)
    assert pm.mask.sum(1).tolist() == [4, 4]
    assert pm.mask[0].tolist() == [False] * 4 + [True] * 4
    # all valid patches, then the lowest-index invalid ones
    assert pm.mask[1].tolist() == [True, True, True, True, False, False, False, False]


def test_gumbel_sampling_follows_softmax() -> None:
    draws, t = 20000, 0.5
    base = torch.tensor([0.0, 0.3, -0.2, 0.8, 0.1])
    scores = base.expand(draws, 5)
    pm = text_guided_patch_masking(scores, 0.1, temperature=t, generator=torch.Generator().manual_seed(2))
    assert pm.mask.sum(1).eq(1).all()  # round(0.5) = 1 patch per row
    probs = torch.softmax(base.double() / t, dim=0)
    freq = pm.mask.double().sum(0)
    sigma = torch.sqrt(draws * probs * (1 - probs))
    assert bool(((freq - draws * probs).abs() < 5 * sigma).all())


def test_large_temperature_is_nearly_uniform_and_seeded() -> None:
    draws, n = 8000, 7
    scores = torch.linspace(0, 1, n).expand(draws, n)
    pm = text_guided_patch_masking(scores, 0.3, temperature=1e4, generator=torch.Generator().manual_seed(3))
    p = 2 / n
    freq = pm.mask.double().sum(0)
    assert (freq - draws * p).abs().max() < 5 * math.sqrt(draws * p * (1 - p))
    s = torch.randn(4, 20)
    a = text_guided_patch_masking(s, 0.4, temperature=1.0, generator=torch.Generator().manual_seed(5))
    b = text_guided_patch_masking(s, 0.4, temperature=1.0, generator=torch.Generator().manual_seed(5))
    c = text_guided_patch_masking(s, 0.4, temperature=1.0, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.mask, b.mask) and not torch.equal(a.mask, c.mask)


def test_module_and_no_gradient() -> None:
    masker = TextGuidedPatchMasker(0.5, temperature=0.0, patch_size=4)
    images = torch.randn(2, 3, 8, 12)
    scores = torch.randn(2, 6, requires_grad=True)
    out = masker.mask_images(images, scores=scores)
    assert torch.equal(out.mask, _ref_topk(scores.detach(), 3))
    assert not out.mask.requires_grad
    with pytest.raises(ValueError, match="scores"):
        masker.mask_images(images)
    with pytest.raises(ValueError, match="scores"):
        masker.mask_images(images, scores=torch.randn(2, 5))


def test_bad_inputs_name_the_argument() -> None:
    with pytest.raises(TypeError, match="scores"):
        text_guided_patch_masking(torch.zeros(2, 5, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match="scores"):
        text_guided_patch_masking(torch.zeros(5), 0.5)
    with pytest.raises(ValueError, match="valid"):
        text_guided_patch_masking(torch.zeros(2, 5), 0.5, valid=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="valid"):
        text_guided_patch_masking(torch.zeros(2, 5), 0.5, valid=torch.ones(2, 5))
    with pytest.raises(ValueError, match="temperature"):
        text_guided_patch_masking(torch.zeros(2, 5), 0.5, temperature=-1.0)
    with pytest.raises(ValueError, match="ratio"):
        text_guided_patch_masking(torch.zeros(2, 5), 1.0)
    with pytest.raises(ValueError, match="generator"):
        text_guided_patch_masking(torch.zeros(2, 5, device="meta"), 0.5, generator=torch.Generator())
