"""Positives masks: the fact relation, ITC targets and ITM negatives that exclude true captions."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from maskmm.data import ImageTextCollator, ShapesDataset, WordTokenizer
from maskmm.data.facts import encode_facts, fact_id, normalize_caption
from maskmm.data.grammar import caption_holds
from maskmm.losses import (
    ImageTextContrastive,
    batch_positives,
    hard_negative_matching,
    image_text_contrastive_loss,
    pair_positives,
    sample_hard_negatives,
)


def _random_facts(rng: random.Random, n: int, pool: int, most: int, allow_empty: bool) -> list[set[int]]:
    lo = 0 if allow_empty else 1
    return [set(rng.sample(range(pool), rng.randint(lo, most))) for _ in range(n)]


@pytest.mark.parametrize("seed", range(4))
def test_pair_positives_equals_the_subset_relation(seed):
    rng = random.Random(seed)
    ni, nc = rng.randint(1, 9), rng.randint(1, 9)
    img = _random_facts(rng, ni, 8, 6, allow_empty=True)
    cap = _random_facts(rng, nc, 8, 3, allow_empty=True)
    got = pair_positives(encode_facts(img), encode_facts(cap))
    want = torch.tensor([[bool(c) and c <= i for c in cap] for i in img], dtype=torch.bool).reshape(ni, nc)
    assert torch.equal(got, want)
    if ni == nc:
        ids = torch.tensor([rng.randint(0, 3) for _ in range(ni)])
        got = pair_positives(encode_facts(img), encode_facts(cap), ids)
        assert torch.equal(got, want | (ids[:, None] == ids[None, :]))


def test_a_caption_without_facts_is_true_of_no_image():
    img = encode_facts([{"a"}, set()])
    cap = encode_facts([set(), {"a"}])
    assert pair_positives(img, cap).tolist() == [[False, True], [False, False]]


def test_pair_positives_rejects_bad_input():
    with pytest.raises(TypeError, match="image_facts"):
        pair_positives(torch.zeros(2, 3), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="caption_facts"):
        pair_positives(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="as many images as captions"):
        pair_positives(
            torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 1, dtype=torch.long), torch.zeros(2).long()
        )
    with pytest.raises(ValueError, match="caption_facts"):
        batch_positives(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 1, dtype=torch.long))


def test_fact_ids_are_stable_and_non_negative():
    assert fact_id(("caption", "a red circle")) == fact_id(("caption", "a red circle"))
    assert fact_id(("caption", "a red circle")) != fact_id(("caption", "a red square"))
    assert all(fact_id(i) >= 0 for i in range(200))
    # unlike hash(), ids do not change between processes (string hashing is salted per process)
    code = "from maskmm.data.facts import fact_id; print(fact_id(('at', 'small', 'red', 'circle', 'tl')))"
    for salt in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": salt}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert int(out.stdout) == fact_id(("at", "small", "red", "circle", "tl"))
    assert normalize_caption("  A Red  circle.\n") == "a red circle"


def test_built_in_batches_mark_exactly_the_true_captions():
    ds = ShapesDataset("train", 256, seed=0)
    collate = ImageTextCollator(WordTokenizer(ds.config), 32)
    idx = list(range(0, 256, 2))
    batch = collate([ds[i] for i in idx])
    got = batch_positives(batch["image_facts"], batch["caption_facts"])
    scenes = [ds.scene(i) for i in idx]
    want = torch.tensor([[caption_holds(c.spec, s.facts) for c in scenes] for s in scenes])
    assert torch.equal(got, want)
    assert (got & ~torch.eye(len(idx), dtype=torch.bool)).any(), "expected some caption true of 2 scenes"
    assert "image_facts" not in ImageTextCollator(WordTokenizer(ds.config), 32, facts=False)([ds[0]])


def test_other_data_marks_duplicate_captions():
    from maskmm.data import CaptionSpec  # noqa: F401  (only to show the built-in facts are not needed)

    items = [
        {"image": torch.zeros(3, 4, 4), "caption": c, "image_id": i, "index": i}
        for i, c in enumerate(["A dog on grass.", "a cat", "a  dog on grass", "a dog"])
    ]

    def tok(texts, max_len, padding="longest"):
        from maskmm.data import TokenizedText

        n = len(texts)
        return TokenizedText(
            torch.ones(n, 2, dtype=torch.long), torch.ones(n, 2, dtype=torch.bool), torch.zeros(n, 2).long()
        )

    batch = ImageTextCollator(tok, 8)(items)
    pos = batch_positives(batch["image_facts"], batch["caption_facts"])
    want = torch.eye(4, dtype=torch.bool)
    want[0, 2] = want[2, 0] = True
    assert torch.equal(pos, want)
    with pytest.raises(ValueError, match="image_facts"):
        ImageTextCollator(tok, 8)([{**items[0], "image_facts": {"x"}}])


# ----------------------------------------------------------------------------- ITC


def _ref_itc(img, txt, temp, pos):
    """float64 multi-positive InfoNCE: image i's positives are row i of ``pos | eye``, text j's column j."""
    p = (pos | torch.eye(pos.shape[0], dtype=torch.bool)).double()
    t_i2t = p / p.sum(1, keepdim=True)
    t_t2i = p.t() / p.t().sum(1, keepdim=True)
    li = -(t_i2t * torch.log_softmax(img @ txt.t() / temp, 1)).sum(1).mean()
    lt = -(t_t2i * torch.log_softmax(txt @ img.t() / temp, 1)).sum(1).mean()
    return (li + lt) / 2


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_itc_with_positives_matches_reference(dtype, tol):
    g = torch.Generator().manual_seed(0)
    b, e = 7, 5
    img = F.normalize(torch.randn(b, e, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(torch.randn(b, e, generator=g, dtype=torch.float64), dim=-1)
    pos = torch.rand(b, b, generator=g) < 0.3  # not symmetric
    assert not torch.equal(pos, pos.t())
    x_img = img.to(dtype).detach().clone().requires_grad_(True)
    x_txt = txt.to(dtype).detach().clone().requires_grad_(True)
    temp = torch.tensor(0.1, dtype=dtype, requires_grad=True)
    out = image_text_contrastive_loss(x_img, x_txt, temp, positives=pos)
    out.loss.backward()
    r_img, r_txt = img.clone().requires_grad_(True), txt.clone().requires_grad_(True)
    r_temp = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    ref = _ref_itc(r_img, r_txt, r_temp, pos)
    ref.backward()
    torch.testing.assert_close(out.loss.double(), ref.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(x_img.grad.double(), r_img.grad, rtol=tol, atol=tol)
    torch.testing.assert_close(x_txt.grad.double(), r_txt.grad, rtol=tol, atol=tol)
    torch.testing.assert_close(temp.grad.double(), r_temp.grad, rtol=tol, atol=tol)
    # a true caption counts as a hit in the accuracy: with identical features every row hits
    same = image_text_contrastive_loss(img, img, 0.1, positives=pos)
    assert same.stats["i2t_acc"] == 1.0 and same.stats["t2i_acc"] == 1.0


def test_itc_without_marked_positives_equals_today():
    g = torch.Generator().manual_seed(1)
    img = F.normalize(torch.randn(6, 4, generator=g), dim=-1)
    txt = F.normalize(torch.randn(6, 4, generator=g), dim=-1)
    m_img = F.normalize(torch.randn(6, 4, generator=g), dim=-1)
    m_txt = F.normalize(torch.randn(6, 4, generator=g), dim=-1)
    ids = torch.tensor([0, 1, 1, 2, 3, 4])
    kw = {"image_feat_m": m_img, "text_feat_m": m_txt, "alpha": 0.4, "image_ids": ids}
    base = image_text_contrastive_loss(img, txt, 0.07, **kw)
    eye = torch.eye(6, dtype=torch.bool)
    for pos in (torch.zeros(6, 6, dtype=torch.bool), eye):
        assert torch.equal(image_text_contrastive_loss(img, txt, 0.07, positives=pos, **kw).loss, base.loss)


def test_itc_positives_combine_with_ids_queue_and_distillation():
    """Reference built by hand: targets = alpha * softmax(momentum sims) + (1 - alpha) * hard, hard
    normalised over own pair | same id (batch and queue) | positives (batch keys only)."""
    g = torch.Generator().manual_seed(2)
    b, e, q = 5, 4, 3
    f = [F.normalize(torch.randn(b, e, generator=g, dtype=torch.float64), dim=-1) for _ in range(4)]
    img, txt, m_img, m_txt = f
    qi = F.normalize(torch.randn(q, e, generator=g, dtype=torch.float64), dim=-1)
    qt = F.normalize(torch.randn(q, e, generator=g, dtype=torch.float64), dim=-1)
    ids = torch.tensor([0, 1, 2, 3, 1])
    qids = torch.tensor([1, -1, 4])
    pos = torch.zeros(b, b, dtype=torch.bool)
    pos[0, 3] = pos[2, 0] = True
    alpha, temp = 0.4, 0.1
    out = image_text_contrastive_loss(
        img, txt, temp, image_ids=ids, positives=pos, image_feat_m=m_img, text_feat_m=m_txt,
        alpha=alpha, image_queue=qi, text_queue=qt, id_queue=qids, gather=False,
    )  # fmt: skip
    k_img, k_txt, k_ids = torch.cat([m_img, qi]), torch.cat([m_txt, qt]), torch.cat([ids, qids])
    same = ids[:, None] == k_ids[None, :]
    extra = F.pad(pos, (0, q))
    h_i2t = (same | extra).double()
    h_t2i = (same | F.pad(pos.t(), (0, q))).double()
    h_i2t, h_t2i = h_i2t / h_i2t.sum(1, keepdim=True), h_t2i / h_t2i.sum(1, keepdim=True)
    t_i2t = alpha * torch.softmax(m_img @ k_txt.t() / temp, 1) + (1 - alpha) * h_i2t
    t_t2i = alpha * torch.softmax(m_txt @ k_img.t() / temp, 1) + (1 - alpha) * h_t2i
    li = -(t_i2t * torch.log_softmax(img @ k_txt.t() / temp, 1)).sum(1).mean()
    lt = -(t_t2i * torch.log_softmax(txt @ k_img.t() / temp, 1)).sum(1).mean()
    torch.testing.assert_close(out.loss, (li + lt) / 2, rtol=1e-12, atol=1e-12)


def test_itc_rejects_a_positives_mask_of_the_wrong_shape():
    img = F.normalize(torch.randn(4, 3), dim=-1)
    with pytest.raises(ValueError, match="positives"):
        image_text_contrastive_loss(img, img, 0.1, positives=torch.zeros(3, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="positives"):
        image_text_contrastive_loss(img, img, 0.1, positives=torch.zeros(4, 4))
    with pytest.raises(ValueError, match="positives"):
        ImageTextContrastive(3)(img, img, positives=torch.zeros(4, 5, dtype=torch.bool))


# ----------------------------------------------------------------------------- ITM


@pytest.mark.parametrize("hardness", [1.0, 0.5, 0.0])
def test_itm_never_draws_a_true_caption_as_negative(hardness):
    g = torch.Generator().manual_seed(3)
    b = 6
    sim = torch.randn(b, b, generator=g) * 3
    pos = torch.zeros(b, b, dtype=torch.bool)
    pos[0, 1] = pos[0, 2] = pos[3, 4] = pos[5, 0] = True  # not symmetric
    # make the true captions the most similar ones, so that without the mask they would dominate
    sim_i2t = sim.masked_fill(pos, 20.0)
    sim_t2i = sim.t().masked_fill(pos.t(), 20.0)
    seen_t = torch.zeros(b, b, dtype=torch.bool)
    seen_i = torch.zeros(b, b, dtype=torch.bool)
    for _ in range(3000 // b):
        neg_t, neg_i = sample_hard_negatives(sim_i2t, sim_t2i, generator=g, hardness=hardness, positives=pos)
        seen_t[torch.arange(b), neg_t] = True
        seen_i[torch.arange(b), neg_i] = True
    assert not (seen_t & (pos | torch.eye(b, dtype=torch.bool))).any()  # text j never image i's negative
    assert not (seen_i & (pos.t() | torch.eye(b, dtype=torch.bool))).any()  # image i never text j's
    assert seen_t.sum(1).min() > 0 and seen_i.sum(1).min() > 0
    # without the mask the same draws hit the true captions
    neg_t, _ = sample_hard_negatives(sim_i2t, sim_t2i, generator=g, hardness=1.0)
    assert pos[torch.arange(b), neg_t].any()


def test_itm_without_marked_positives_equals_today():
    sim = torch.randn(7, 7, generator=torch.Generator().manual_seed(4))
    ids = torch.tensor([0, 0, 1, 2, 3, 4, 5])
    base = sample_hard_negatives(sim, sim.t(), ids, generator=torch.Generator().manual_seed(9), hardness=0.7)
    for pos in (torch.zeros(7, 7, dtype=torch.bool), torch.eye(7, dtype=torch.bool)):
        got = sample_hard_negatives(
            sim, sim.t(), ids, generator=torch.Generator().manual_seed(9), hardness=0.7, positives=pos
        )
        assert all(torch.equal(x, y) for x, y in zip(got, base))


def test_itm_fallback_flags_follow_each_direction():
    """Image 0: every other text is true of it (no negative text); every text still has a negative image."""
    pos = torch.zeros(3, 3, dtype=torch.bool)
    pos[0, 1] = pos[0, 2] = True
    sim = torch.zeros(3, 3)
    negs = sample_hard_negatives(sim, sim, return_flags=True, positives=pos)
    assert negs.text_fallback.tolist() == [True, False, False]
    assert negs.image_fallback.tolist() == [False, False, False]  # text 1 has image 2, text 2 image 1
    assert negs.pair_valid().tolist() == [True] * 3 + [True, True, True] + [False, True, True]
    assert negs.image_idx[1:].tolist() == [2, 1]


def test_hard_negative_matching_never_fuses_a_true_caption_as_negative():
    b, lt, d = 5, 3, 4
    g = torch.Generator().manual_seed(5)
    img = torch.randn(b, 2, d, generator=g)
    txt = torch.randn(b, lt, d, generator=g)
    pos = torch.zeros(b, b, dtype=torch.bool)
    pos[1, 2] = pos[4, 0] = True
    seen = []

    def fuse(i, iv, t, tv):
        seen.append((i[:, 0, 0].clone(), t[:, 0, 0].clone()))
        return torch.cat([i[:, 0], t[:, 0]], -1)

    head = torch.nn.Linear(2 * d, 2)
    sim = torch.zeros(b, b).masked_fill(pos, 50.0)
    for _ in range(50):
        hard_negative_matching(
            img, None, txt, torch.ones(b, lt, dtype=torch.bool), sim, sim.t(), fuse=fuse, head=head,
            generator=g, positives=pos,
        )  # fmt: skip
    key_i = {float(img[k, 0, 0]): k for k in range(b)}
    key_t = {float(txt[k, 0, 0]): k for k in range(b)}
    for i_rows, t_rows in seen:
        pairs = [(key_i[float(a)], key_t[float(c)]) for a, c in zip(i_rows[b:], t_rows[b:])]
        assert all(not pos[i, j] and i != j for i, j in pairs)


def test_itc_exclude_mode_leaves_marked_keys_out_of_the_softmax():
    """Reference: each query's softmax runs over its keys minus the marked ones (own pair and
    id-positives stay); distillation targets are renormalised over the same keys."""
    g = torch.Generator().manual_seed(6)
    b, e, q = 6, 4, 2
    f = [F.normalize(torch.randn(b, e, generator=g, dtype=torch.float64), dim=-1) for _ in range(4)]
    img, txt, m_img, m_txt = f
    qi = F.normalize(torch.randn(q, e, generator=g, dtype=torch.float64), dim=-1)
    qt = F.normalize(torch.randn(q, e, generator=g, dtype=torch.float64), dim=-1)
    ids, qids = torch.tensor([0, 1, 2, 3, 4, 1]), torch.tensor([2, -1])
    pos = torch.rand(b, b, generator=g) < 0.3
    pos[1, 5] = True  # also an id-positive: stays a positive
    alpha, temp = 0.4, 0.1
    x = img.clone().requires_grad_(True)
    out = image_text_contrastive_loss(
        x, txt, temp, image_ids=ids, positives=pos, false_negatives="exclude", image_feat_m=m_img,
        text_feat_m=m_txt, alpha=alpha, image_queue=qi, text_queue=qt, id_queue=qids, gather=False,
    )  # fmt: skip
    out.loss.backward()
    r = img.clone().requires_grad_(True)
    k_img, k_txt, k_ids = torch.cat([m_img, qi]), torch.cat([m_txt, qt]), torch.cat([ids, qids])
    total = 0.0
    for query, q_m, keys, marks in ((r, m_img, k_txt, pos), (txt, m_txt, k_img, pos.t())):
        for i in range(b):
            hard = (ids[i] == k_ids) & (k_ids >= 0)
            hard[i] = True
            keep = ~(F.pad(marks[i], (0, q)) & ~hard)
            t = hard[keep].double() / hard[keep].sum()
            t = alpha * torch.softmax(q_m[i] @ keys[keep].t() / temp, 0) + (1 - alpha) * t
            total = total - (t * torch.log_softmax(query[i] @ keys[keep].t() / temp, 0)).sum() / b
    ref = total / 2
    ref.backward()
    torch.testing.assert_close(out.loss, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad, r.grad, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="false_negatives"):
        image_text_contrastive_loss(img, txt, temp, positives=pos, false_negatives="drop")
    with pytest.raises(ValueError, match="false_negatives"):
        ImageTextContrastive(4, false_negatives="drop")
