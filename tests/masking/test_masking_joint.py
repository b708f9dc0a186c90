from __future__ import annotations

import pytest
import torch

from maskmm.masking import (
    BlockPatchMasker,
    JointMasker,
    PixelBlockMasker,
    RandomPatchMasker,
    TextGuidedPatchMasker,
    TokenMasker,
)

MASK = 3


def _inputs(b: int = 5, length: int = 11):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(b, 3, 32, 48, generator=g)
    ids = torch.randint(4, 30, (b, length), generator=g)
    ids[:, 0] = 1
    valid = torch.ones(b, length, dtype=torch.bool)
    valid[0, 7:] = False
    ids[0, 7:] = 0
    return images, ids, valid


def _text_masker(ratio: float = 0.25) -> TokenMasker:
    return TokenMasker(ratio, mask_token_id=MASK, vocab_size=30, special_ids=(0, 1, 2, 3))


def test_joint_mode_one_view_equals_sequential_calls() -> None:
    images, ids, valid = _inputs()
    image_masker, text_masker = RandomPatchMasker(0.75, patch_size=8), _text_masker()
    out = JointMasker(image_masker, text_masker, mode="joint")(
        images, ids, valid, generator=torch.Generator().manual_seed(1)
    )
    assert out.mode == "joint" and len(out.views) == 1
    view = out.views[0]
    assert view.image.mask.shape == (5, 24) and view.image.mask.sum(1).tolist() == [18] * 5
    assert view.text.mask.any(dim=1).all()  # both modalities masked in the same view
    g = torch.Generator().manual_seed(1)
    img_ref = image_masker.mask_images(images, generator=g)
    txt_ref = text_masker(ids, valid, generator=g)
    assert torch.equal(view.image.mask, img_ref.mask)
    assert torch.equal(view.image.patches.ids_restore, img_ref.patches.ids_restore)
    assert all(torch.equal(a, b) for a, b in zip(view.text, txt_ref))


def test_separate_mode_masks_one_modality_per_view() -> None:
    images, ids, valid = _inputs()
    masker = JointMasker(
        PixelBlockMasker(0.6, block_size=16, patch_size=8), _text_masker(0.3), mode="separate"
    )
    out = masker(images, ids, valid, generator=torch.Generator().manual_seed(2))
    assert out.mode == "separate" and len(out.views) == 2
    img_view, txt_view = out.views
    # view 0: masked image, clean text
    assert img_view.image.pixel_mask.shape == (5, 32, 48)
    assert img_view.image.mask.sum(1).tolist() == [16] * 5  # 4 of 6 blocks, 4 patches each
    hidden = img_view.image.pixel_mask.unsqueeze(1).expand_as(images)
    assert (img_view.image.images[hidden] == 0).all()
    assert torch.equal(img_view.image.images[~hidden], images[~hidden])
    assert torch.equal(img_view.text.input_ids, ids)
    assert not img_view.text.mask.any() and (img_view.text.labels == -100).all()
    # view 1: clean image, masked text
    assert txt_view.image.images is images and not txt_view.image.mask.any()
    assert txt_view.image.mask.shape == (5, 24)
    assert txt_view.text.mask.sum() > 0
    assert torch.equal(txt_view.text.labels[txt_view.text.mask], ids[txt_view.text.mask])


def test_whole_word_and_text_guided_pass_through() -> None:
    images, ids, valid = _inputs(b=3)
    word_ids = torch.arange(11).div(2, rounding_mode="floor").expand(3, 11).clone()
    word_ids[:, 0] = -1
    text_masker = TokenMasker(0.4, mask_token_id=MASK, vocab_size=30, special_ids=(0, 1), whole_word=True)
    masker = JointMasker(TextGuidedPatchMasker(0.5, patch_size=8), text_masker)
    scores = torch.arange(24.0).expand(3, 24)
    out = masker(images, ids, valid, word_ids=word_ids, patch_scores=scores)
    assert out.views[0].image.mask[:, 12:].all() and not out.views[0].image.mask[:, :12].any()
    m = out.views[0].text.mask[1:]  # rows without padding
    for pos in range(2, 10, 2):  # tokens (2, 3), (4, 5), ... form one word and share the mask
        assert torch.equal(m[:, pos], m[:, pos + 1])
    for row in range(2):  # 6 words (0 .. 5) -> round(0.4 * 6) = 2 words masked
        assert len(set(word_ids[0][m[row]].tolist())) == 2
    with pytest.raises(ValueError, match="scores"):
        masker(images, ids, valid, word_ids=word_ids)


def test_determinism() -> None:
    images, ids, valid = _inputs()
    masker = JointMasker(BlockPatchMasker(0.4, patch_size=8), _text_masker())
    a = masker(images, ids, valid, generator=torch.Generator().manual_seed(3)).views[0]
    b = masker(images, ids, valid, generator=torch.Generator().manual_seed(3)).views[0]
    c = masker(images, ids, valid, generator=torch.Generator().manual_seed(4)).views[0]
    assert torch.equal(a.image.mask, b.image.mask) and torch.equal(a.text.input_ids, b.text.input_ids)
    assert not (torch.equal(a.image.mask, c.image.mask) and torch.equal(a.text.mask, c.text.mask))


def test_bad_inputs_name_the_argument() -> None:
    images, ids, valid = _inputs()
    with pytest.raises(ValueError, match="mode"):
        JointMasker(RandomPatchMasker(0.5), _text_masker(), mode="both")
    with pytest.raises(TypeError, match="image_masker"):
        JointMasker(_text_masker(), _text_masker())
    with pytest.raises(TypeError, match="text_masker"):
        JointMasker(RandomPatchMasker(0.5), 3)  # type: ignore[arg-type]
    masker = JointMasker(RandomPatchMasker(0.5, patch_size=8), _text_masker())
    with pytest.raises(ValueError, match="input_ids"):
        masker(images, ids[:3], valid[:3])
    with pytest.raises(ValueError, match="images"):
        masker(images[0], ids, valid)
