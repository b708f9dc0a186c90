"""Edge cases end to end: maskers that mask nothing feed targets and losses that stay finite.

Covers ratio 0, a sample with a single patch or a single valid token, and a batch with no
maskable token at all: every loss is 0, finite, graph-connected, and passes zero gradient.
"""

from __future__ import annotations

import pytest
import torch

from maskmm.losses import (
    image_text_matching_loss,
    latent_regression_loss,
    masked_token_loss,
    pixel_reconstruction_loss,
    prototype_loss,
    sample_hard_negatives,
)
from maskmm.masking import mask_tokens, pixel_block_masking, random_patch_masking
from maskmm.targets import masked_feature_targets, patchify, pixel_targets, top_k_layer_targets

PAD, CLS, SEP, MASK = 0, 1, 2, 3


def _assert_zero_loss_zero_grad(loss: torch.Tensor, leaf: torch.Tensor) -> None:
    assert torch.isfinite(loss) and loss.item() == 0.0 and loss.requires_grad
    (grad,) = torch.autograd.grad(loss, leaf)
    assert torch.equal(grad, torch.zeros_like(leaf))


@pytest.mark.parametrize("fused", [False, True])
def test_no_maskable_token_gives_no_label_and_a_zero_concept_loss(fused: bool) -> None:
    ids = torch.tensor([[CLS, SEP, PAD, PAD], [CLS, SEP, PAD, PAD], [PAD, PAD, PAD, PAD]])
    tm = mask_tokens(
        ids, ids != PAD, 0.5, mask_token_id=MASK, vocab_size=9, special_ids=(PAD, CLS, SEP, MASK)
    )
    assert not tm.mask.any() and torch.equal(tm.input_ids, ids) and bool((tm.labels == -100).all())
    hidden = torch.randn(3, 4, 5, requires_grad=True)
    weight = torch.randn(9, 5, requires_grad=True)
    head = weight if fused else (lambda x: x @ weight.t())
    out = masked_token_loss(hidden, tm.labels, head)
    _assert_zero_loss_zero_grad(out.loss, hidden)
    assert out.stats["num_masked"] == 0 and torch.isfinite(out.stats["accuracy"])


def test_single_valid_token_is_masked_and_scored() -> None:
    ids = torch.tensor([[CLS, 7, SEP, PAD]])
    tm = mask_tokens(ids, ids != PAD, 0.1, mask_token_id=MASK, vocab_size=9, special_ids=(PAD, CLS, SEP))
    assert tm.mask.tolist() == [[False, True, False, False]] and tm.labels[0, 1] == 7
    hidden = torch.randn(1, 4, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(9, 5, dtype=torch.float64)
    out = masked_token_loss(hidden, tm.labels, weight)
    ref = -torch.log_softmax(hidden[0, 1] @ weight.t(), -1)[7]
    torch.testing.assert_close(out.loss, ref)


@pytest.mark.parametrize(("num_patches", "ratio"), [(7, 0.0), (1, 0.9)])  # ratio 0; one patch stays visible
def test_nothing_masked_through_feature_and_layer_targets(num_patches: int, ratio: float) -> None:
    b, d = 3, 6
    pm = random_patch_masking(b, num_patches, ratio, generator=torch.Generator().manual_seed(0))
    assert not pm.mask.any() and pm.ids_keep.shape == (b, num_patches)
    teacher = torch.randn(b, 1 + num_patches, d)
    tgt = masked_feature_targets(teacher, pm)  # MIM: [B, 0, D]
    assert tgt.features.shape == (b, 0, d)
    pred = torch.randn(b, 0, d, requires_grad=True)
    out = latent_regression_loss(pred, tgt.features, tgt.valid)
    _assert_zero_loss_zero_grad(out.loss, pred)
    assert all(torch.isfinite(v) for v in out.stats.values())

    layers = [torch.randn(b, num_patches, d) for _ in range(3)]  # MRM: all positions, none scored
    target = top_k_layer_targets(layers, 2)
    full_pred = torch.randn(b, num_patches, d, requires_grad=True)
    for kind in ("smooth_l1", "mse", "cosine"):
        out = latent_regression_loss(full_pred, target, pm.mask, kind=kind)
        _assert_zero_loss_zero_grad(out.loss, full_pred)

    logits = torch.randn(b, num_patches, 11, requires_grad=True)  # SemMIM codes
    out = prototype_loss(logits, torch.softmax(torch.randn(b, num_patches, 11), -1), pm.mask)
    _assert_zero_loss_zero_grad(out.loss, logits)
    assert all(torch.isfinite(v) for v in out.stats.values())


def test_nothing_masked_through_pixel_targets() -> None:
    pix = pixel_block_masking(2, (32, 48), 0.0, block_size=16, patch_size=16)
    assert not pix.pixel_mask.any() and not pix.patch_mask.any()
    images = torch.rand(2, 3, 32, 48)
    pred = torch.randn(2, 6, 16 * 16 * 3, requires_grad=True)
    out = pixel_reconstruction_loss(pred, pixel_targets(images, 16), pix.patch_mask)
    _assert_zero_loss_zero_grad(out.loss, pred)
    pred_img = torch.randn(2, 3, 32, 48, requires_grad=True)
    out = pixel_reconstruction_loss(pred_img, images, pix.pixel_mask, layout="pixel")
    _assert_zero_loss_zero_grad(out.loss, pred_img)
    assert patchify(images, 16).shape == (2, 6, 768)


def test_batch_of_one_image_for_matching() -> None:
    # no negative exists: the fallback pairs are flagged and dropped, the loss stays finite
    negs = sample_hard_negatives(torch.zeros(1, 1), torch.zeros(1, 1), return_flags=True)
    logits = torch.randn(3, 2, requires_grad=True)
    out = image_text_matching_loss(logits, valid=negs.pair_valid())
    ref = -torch.log_softmax(logits[0], -1)[1]
    torch.testing.assert_close(out.loss, ref)
