"""``hard_negative_matching(rows=...)``: scoring a slice of the candidate batch (data parallelism)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from maskmm.losses import hard_negative_matching

B, L, D = 6, 4, 8


def _setup(ids: list[int] | None = None):
    torch.manual_seed(0)
    fusion, head = nn.Linear(2 * D, D).double(), nn.Linear(D, 2).double()
    g = torch.Generator().manual_seed(1)
    img = torch.randn(B, L, D, generator=g, dtype=torch.float64, requires_grad=True)
    txt = torch.randn(B, L, D, generator=g, dtype=torch.float64, requires_grad=True)
    valid = torch.arange(L)[None] < torch.randint(1, L + 1, (B,), generator=g)[:, None]
    sim = torch.randn(B, B, generator=g, dtype=torch.float64)
    calls = []

    def fuse(i, iv, t, tv):
        calls.append(i.shape[0])
        return torch.tanh(fusion(torch.cat([i[:, 0], t[:, 0]], dim=-1)))

    image_ids = None if ids is None else torch.tensor(ids)
    return img, txt, valid, sim, fuse, head, image_ids, calls


def _run(img, txt, valid, sim, fuse, head, image_ids, rows, seed=5):
    g = torch.Generator().manual_seed(seed)
    out = hard_negative_matching(
        img, None, txt, valid, sim, fuse=fuse, head=head, image_ids=image_ids, generator=g, rows=rows
    )
    return out, g


@pytest.mark.parametrize("ids", [None, [0, 1, 1, 2, 2, 2]])
def test_chunks_add_up_to_the_whole_batch(ids):
    """Every chunk draws the same negatives as the whole batch (same generator consumption), and the
    chunk means weighted by their share of the scored pairs give the whole-batch loss and gradients."""
    img, txt, valid, sim, fuse, head, image_ids, _ = _setup(ids)
    full, g_full = _run(img, txt, valid, sim, fuse, head, image_ids, None)
    g_img, g_txt = torch.autograd.grad(full.loss, (img, txt))
    total = 0.0
    for rows in ((0, 2), (2, 4), (4, 6)):
        out, g = _run(img, txt, valid, sim, fuse, head, image_ids, rows)
        assert torch.equal(g.get_state(), g_full.get_state())
        assert out.stats["num_scored_total"] == 3 * B  # every row here has a valid negative
        total = total + out.loss * out.stats["num_scored"] / out.stats["num_scored_total"]
    torch.testing.assert_close(total, full.loss)
    c_img, c_txt = torch.autograd.grad(total, (img, txt))
    torch.testing.assert_close(c_img, g_img)
    torch.testing.assert_close(c_txt, g_txt)


def test_whole_range_equals_default_and_fallback_rows_are_counted():
    ids = [0, 0, 0, 0, 0, 0]  # no valid negative anywhere: only the positives are scored
    img, txt, valid, sim, fuse, head, image_ids, _ = _setup(ids)
    full, _ = _run(img, txt, valid, sim, fuse, head, image_ids, None)
    whole, _ = _run(img, txt, valid, sim, fuse, head, image_ids, (0, B))
    torch.testing.assert_close(whole.loss, full.loss)
    assert set(full.stats) == {"accuracy", "pos_acc", "neg_acc"}
    assert whole.stats["num_scored"] == B and whole.stats["num_scored_total"] == B
    part, _ = _run(img, txt, valid, sim, fuse, head, image_ids, (1, 3))
    assert part.stats["num_scored"] == 2 and part.stats["num_scored_total"] == B


def test_empty_rows_draw_but_do_not_fuse():
    img, txt, valid, sim, fuse, head, image_ids, calls = _setup()
    out, g = _run(img, txt, valid, sim, fuse, head, image_ids, (3, 3))
    _, g_full = _run(img, txt, valid, sim, fuse, head, image_ids, None)
    assert calls == [3 * B]  # only the full call fused
    assert out.loss.item() == 0.0 and out.stats["num_scored"] == 0
    assert torch.equal(g.get_state(), g_full.get_state())
    (gi,) = torch.autograd.grad(out.loss, (img,))
    assert torch.count_nonzero(gi) == 0


@pytest.mark.parametrize("rows", [(0, B + 1), (-1, 2), (3, 2), [0, 2], (0.0, 2), (0, True), (1,)])
def test_bad_rows_name_the_argument(rows):
    img, txt, valid, sim, fuse, head, image_ids, _ = _setup()
    with pytest.raises(ValueError, match="rows must be"):
        _run(img, txt, valid, sim, fuse, head, image_ids, rows)
