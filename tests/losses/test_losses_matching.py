"""Hard-negative sampling and the image-text matching loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maskmm.losses import ImageTextMatchingLoss, image_text_matching_loss, sample_hard_negatives


def _sims(b, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, b, generator=g) * 2
    return s, s.t().contiguous() + 0.3 * torch.randn(b, b, generator=g)


def test_negatives_never_share_an_id_over_many_draws() -> None:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 6, (31,), generator=g)  # many pairs share an image
    for _ in range(40):
        sim_i2t = torch.randn(31, 31, generator=g) * 3
        sim_t2i = torch.randn(31, 31, generator=g) * 3
        res = sample_hard_negatives(sim_i2t, sim_t2i, ids, generator=g, return_flags=True)
        assert res.text_idx.dtype == torch.long and res.text_idx.shape == (31,)
        assert (ids[res.text_idx] != ids).all() and (ids[res.image_idx] != ids).all()
        assert not res.text_fallback.any() and not res.image_fallback.any()


def test_draws_follow_the_masked_softmax() -> None:
    # R replicas of one 5-pair batch in a block-diagonal similarity (off-block similarity
    # -1e4: probability 0), so one call draws R samples per row.
    b, reps, calls = 5, 100, 10
    ids = torch.tensor([0, 0, 1, 2, 3])
    sim_i2t, sim_t2i = _sims(b, seed=2)
    block = torch.block_diag(*[torch.ones(b, b)] * reps).bool()
    big_ids = (ids.repeat(reps) + 100 * torch.arange(reps).repeat_interleave(b)).contiguous()
    big_i2t = torch.where(block, sim_i2t.repeat(reps, reps), torch.tensor(-1e4))
    big_t2i = torch.where(block, sim_t2i.repeat(reps, reps), torch.tensor(-1e4))
    g = torch.Generator().manual_seed(0)
    counts_t = torch.zeros(b, b)
    counts_i = torch.zeros(b, b)
    rows = torch.arange(b).repeat(reps)
    offset = torch.arange(reps).repeat_interleave(b) * b
    for _ in range(calls):
        t, i = sample_hard_negatives(big_i2t, big_t2i, big_ids, generator=g)
        lt, li = t - offset, i - offset
        assert ((lt >= 0) & (lt < b) & (li >= 0) & (li < b)).all()  # never off-block
        counts_t.index_put_((rows, lt), torch.ones(b * reps), accumulate=True)
        counts_i.index_put_((rows, li), torch.ones(b * reps), accumulate=True)
    n = reps * calls
    same = ids[:, None] == ids[None, :]
    for counts, sim in ((counts_t, sim_i2t), (counts_i, sim_t2i)):
        expected = torch.softmax(sim.double().masked_fill(same, float("-inf")), 1)
        freq = counts.double() / n
        assert (freq[same] == 0).all()
        torch.testing.assert_close(
            freq, expected, atol=0.06, rtol=0
        )  # ~4 sigma at n=1000 (and the draw is seeded)


@pytest.mark.parametrize("hardness", [0.0, 0.3])
def test_hardness_mixes_the_softmax_with_the_uniform_draw(hardness: float) -> None:
    b, draws = 5, 3000
    ids = torch.tensor([0, 0, 1, 2, 3])
    sim_i2t, sim_t2i = _sims(b, seed=3)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(2, b, b)
    rows = torch.arange(b)
    for _ in range(draws):
        t, i = sample_hard_negatives(sim_i2t * 3, sim_t2i * 3, ids, generator=g, hardness=hardness)
        counts[0, rows, t] += 1
        counts[1, rows, i] += 1
    same = ids[:, None] == ids[None, :]
    uniform = (~same).double() / (~same).sum(1, keepdim=True)
    for counts_d, sim in zip(counts, (sim_i2t, sim_t2i)):
        soft = torch.softmax((sim * 3).double().masked_fill(same, float("-inf")), 1)
        expected = hardness * soft + (1 - hardness) * uniform
        freq = counts_d.double() / draws
        assert (freq[same] == 0).all()
        torch.testing.assert_close(freq, expected, atol=0.04, rtol=0)  # > 4 sigma at n=3000


def test_hardness_one_is_the_plain_softmax_draw() -> None:
    sim_i2t, sim_t2i = _sims(7, seed=4)
    a = sample_hard_negatives(sim_i2t, sim_t2i, generator=torch.Generator().manual_seed(5))
    c = sample_hard_negatives(sim_i2t, sim_t2i, generator=torch.Generator().manual_seed(5), hardness=1.0)
    assert all(torch.equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize(("bad", "error"), [(-0.1, ValueError), (1.5, ValueError), (True, TypeError)])
def test_bad_hardness_raises(bad, error) -> None:
    sim_i2t, sim_t2i = _sims(4)
    with pytest.raises(error, match="hardness"):
        sample_hard_negatives(sim_i2t, sim_t2i, hardness=bad)


def test_seeded_determinism_and_one_multinomial_call(monkeypatch) -> None:
    sim_i2t, sim_t2i = _sims(9)
    a = sample_hard_negatives(sim_i2t, sim_t2i, generator=torch.Generator().manual_seed(5))
    b = sample_hard_negatives(sim_i2t, sim_t2i, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    calls = []
    real = torch.multinomial

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "multinomial", counting)
    sample_hard_negatives(sim_i2t, sim_t2i)
    assert calls == [torch.Size([18, 9])]


def test_rows_without_valid_negative_fall_back_and_are_flagged() -> None:
    ids = torch.tensor([4, 4, 4, 7])  # image 3's pair has a distinct id; rows 0-2 only have id-4 or 7
    sim_i2t, sim_t2i = _sims(4)
    res = sample_hard_negatives(sim_i2t, sim_t2i, ids, return_flags=True)
    assert not res.text_fallback.any()  # every row has some other-id pair
    all_same = torch.tensor([2, 2, 2])
    res = sample_hard_negatives(
        sim_i2t[:3, :3],
        sim_t2i[:3, :3],
        all_same,
        return_flags=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert res.text_fallback.all() and res.image_fallback.all()
    assert (res.text_idx != torch.arange(3)).all() and (res.image_idx != torch.arange(3)).all()
    assert torch.equal(res.pair_valid(), torch.tensor([True] * 3 + [False] * 6))
    single = sample_hard_negatives(torch.zeros(1, 1), torch.zeros(1, 1), return_flags=True)
    assert single.text_idx.tolist() == [0] and single.text_fallback.tolist() == [True]


def test_no_ids_excludes_only_the_diagonal() -> None:
    sim = torch.eye(6) * 50.0  # the positive would dominate if it were allowed
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        t, i = sample_hard_negatives(sim, sim, generator=g)
        assert (t != torch.arange(6)).all() and (i != torch.arange(6)).all()


def test_matching_loss_value_and_grad() -> None:
    b = 5
    logits = torch.randn(3 * b, 2, dtype=torch.float64, requires_grad=True)
    out = ImageTextMatchingLoss()(logits)
    (g,) = torch.autograd.grad(out.loss, logits)
    labels = torch.tensor([1] * b + [0] * (2 * b))
    lp = torch.log_softmax(logits, 1)
    ref = -lp[torch.arange(3 * b), labels].mean()
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(out.loss.double(), ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g.double(), g_ref, rtol=1e-5, atol=1e-7)
    acc = (logits.argmax(1) == labels).double().mean()
    torch.testing.assert_close(out.stats["accuracy"].double(), acc)


def test_matching_loss_with_valid_mask_and_fp16() -> None:
    logits = torch.randn(9, 2)
    valid = torch.tensor([True, True, True, False, True, True, True, False, False])
    out = image_text_matching_loss(logits.half(), valid=valid)
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, 0])
    ref = F.cross_entropy(logits.half().double()[valid], labels[valid])
    torch.testing.assert_close(out.loss.double(), ref, rtol=1e-3, atol=1e-3)
    none = image_text_matching_loss(logits.requires_grad_(True), valid=torch.zeros(9, dtype=torch.bool))
    none.loss.backward()
    assert none.loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_bad_inputs_raise() -> None:
    s = torch.randn(4, 4)
    with pytest.raises(ValueError, match="sim_t2i"):
        sample_hard_negatives(s, s[:3])
    with pytest.raises(ValueError, match="image_ids"):
        sample_hard_negatives(s, s, torch.arange(3))
    with pytest.raises(ValueError, match="logits"):
        image_text_matching_loss(torch.randn(7, 2))
    with pytest.raises(TypeError, match="generator"):
        sample_hard_negatives(s, s, generator=1)
