"""The ITM pair layout is ALBEF's ``[positives; (neg image, text); (image, neg text)]`` everywhere.

ALBEF fuses the positives, then ``image_all = cat([image[neg_image_idx], image])`` with
``text_all = cat([text, text[neg_text_idx]])``: rows ``B + i`` pair text ``i`` with its negative
image and rows ``2B + i`` pair image ``i`` with its negative text. The references below build that
order with plain torch, independently of :mod:`maskmm.losses.matching`.
"""

from __future__ import annotations

import pytest
import torch

from maskmm.losses import (
    HardNegatives,
    hard_negative_matching,
    image_text_matching_loss,
    sample_hard_negatives,
)

B = 6


def _albef_rows(neg_image: torch.Tensor, neg_text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image index [3B], text index [3B])`` of ALBEF's pairs: positives, then
    ``cat([image_neg, image])`` against ``cat([text, text_neg])``."""
    own = torch.arange(neg_image.shape[0])
    image_all = torch.cat([own, torch.cat([neg_image, own])])
    text_all = torch.cat([own, torch.cat([own, neg_text])])
    return image_all, text_all


def _reference_masked_ce(logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean 2-way CE over the ``valid`` rows of ALBEF-ordered ``[3B, 2]`` logits (labels 1, 0, 0)."""
    b = logits.shape[0] // 3
    labels = torch.tensor([1] * b + [0] * (2 * b))
    nll = -torch.log_softmax(logits.double(), -1).gather(1, labels[:, None])[:, 0]
    return nll[valid].mean()


def _pair_logits(image_idx: torch.Tensor, text_idx: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``[N, 2]`` logits of pair ``(image_idx[k], text_idx[k])`` looked up in ``table [B, B, 2]``."""
    return table[image_idx, text_idx]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pair_valid_masks_albef_ordered_logits(seed: int) -> None:
    """Asymmetric fallback flags: only the ALBEF-ordered mask selects the right negatives."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(B, B, 2, generator=g, dtype=torch.float64)  # logits of every (image, text) pair
    text_idx = (torch.arange(B) + 1 + torch.randint(0, B - 1, (B,), generator=g)) % B
    image_idx = (torch.arange(B) + 1 + torch.randint(0, B - 1, (B,), generator=g)) % B
    text_fallback = torch.tensor([True, False, False, True, False, False])
    image_fallback = torch.tensor([False, True, False, False, False, True])
    negs = HardNegatives(text_idx, image_idx, text_fallback, image_fallback)

    img_rows, txt_rows = _albef_rows(image_idx, text_idx)
    logits = _pair_logits(img_rows, txt_rows, table)
    # ALBEF row B + i = (neg image of text i, text i): scored iff text i got a real negative image;
    # row 2B + i = (image i, neg text of image i): scored iff image i got a real negative text.
    want_valid = torch.cat([torch.ones(B, dtype=torch.bool), ~image_fallback, ~text_fallback])
    assert torch.equal(negs.pair_valid(), want_valid)

    out = image_text_matching_loss(logits, valid=negs.pair_valid())
    torch.testing.assert_close(out.loss, _reference_masked_ce(logits, want_valid), rtol=1e-12, atol=1e-12)
    # The swapped (non-ALBEF) mask scores different pairs, hence a different loss.
    swapped = torch.cat([torch.ones(B, dtype=torch.bool), ~text_fallback, ~image_fallback])
    assert not torch.allclose(_reference_masked_ce(logits, swapped), out.loss)


def test_hard_negative_matching_fuses_pairs_in_albef_order() -> None:
    """A pair encoder that records the (image, text) indices it receives sees ALBEF's rows, and the
    loss equals the plain-torch masked CE of ALBEF-ordered logits."""
    g = torch.Generator().manual_seed(0)
    table = torch.randn(B, B, 2, generator=g, dtype=torch.float64)
    sim_i2t = torch.randn(B, B, generator=g, dtype=torch.float64) * 3
    sim_t2i = torch.randn(B, B, generator=g, dtype=torch.float64) * 3  # a different direction
    ids = torch.tensor([0, 1, 1, 2, 3, 4])
    # each state carries its own index, so the encoder can tell which rows it received
    img = torch.arange(B, dtype=torch.float64).view(B, 1, 1).expand(B, 3, 2).clone()
    txt = (100 + torch.arange(B, dtype=torch.float64)).view(B, 1, 1).expand(B, 4, 5).clone()
    img_valid = torch.ones(B, 3, dtype=torch.bool)
    img_valid[:, -1] = torch.arange(B) % 2 == 0  # per-image pattern, to check it travels with the rows
    txt_valid = torch.ones(B, 4, dtype=torch.bool)
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def fuse(i, iv, t, tv):
        i_idx, t_idx = i[:, 0, 0].long(), t[:, 0, 0].long() - 100
        seen.append((i_idx, t_idx, iv))
        return torch.stack([i_idx, t_idx], -1)

    def head(pairs):
        return _pair_logits(pairs[:, 0], pairs[:, 1], table)

    out = hard_negative_matching(
        img,
        img_valid,
        txt,
        txt_valid,
        sim_i2t,
        sim_t2i,
        fuse=fuse,
        head=head,
        image_ids=ids,
        generator=torch.Generator().manual_seed(7),
    )
    negs = sample_hard_negatives(
        sim_i2t, sim_t2i, ids, generator=torch.Generator().manual_seed(7), return_flags=True
    )
    assert not torch.equal(negs.text_idx, negs.image_idx)  # the two directions are told apart
    want_img, want_txt = _albef_rows(negs.image_idx, negs.text_idx)
    assert len(seen) == 1
    got_img, got_txt, got_iv = seen[0]
    assert torch.equal(got_img, want_img) and torch.equal(got_txt, want_txt)
    assert torch.equal(got_iv, img_valid[want_img])
    valid = torch.cat([torch.ones(B, dtype=torch.bool), ~negs.image_fallback, ~negs.text_fallback])
    ref = _reference_masked_ce(_pair_logits(want_img, want_txt, table), valid)
    torch.testing.assert_close(out.loss, ref, rtol=1e-12, atol=1e-12)


def test_rows_slice_keeps_albef_order() -> None:
    """With ``rows=(start, stop)`` the ``3n`` fused pairs are ALBEF's rows of the query slice."""
    g = torch.Generator().manual_seed(1)
    sim = torch.randn(B, B, generator=g, dtype=torch.float64)
    img = torch.arange(B, dtype=torch.float64).view(B, 1, 1).expand(B, 2, 2).clone()
    txt = (100 + torch.arange(B, dtype=torch.float64)).view(B, 1, 1).expand(B, 2, 2).clone()
    txt_valid = torch.ones(B, 2, dtype=torch.bool)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def fuse(i, iv, t, tv):
        seen.append((i[:, 0, 0].long(), t[:, 0, 0].long() - 100))
        return torch.zeros(i.shape[0], 2, dtype=i.dtype)

    hard_negative_matching(
        img,
        None,
        txt,
        txt_valid,
        sim,
        fuse=fuse,
        head=lambda x: x,
        generator=torch.Generator().manual_seed(3),
        rows=(2, 5),
    )
    negs = sample_hard_negatives(sim, sim.t(), generator=torch.Generator().manual_seed(3))
    own = torch.arange(2, 5)
    want_img = torch.cat([own, negs[1][2:5], own])
    want_txt = torch.cat([own, own, negs[0][2:5]])
    assert torch.equal(seen[0][0], want_img) and torch.equal(seen[0][1], want_txt)
