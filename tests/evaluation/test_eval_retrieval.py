from __future__ import annotations

import pytest
import torch

from maskmm.evaluation import itm_itc_score, rerank_topk, retrieval_ranks, retrieval_recall


def _ref_recall(sim, image_ids, text_ids, ks):
    """Plain loops: rank of best positive = #negatives with score >= best positive."""
    ni, nt = len(sim), len(sim[0])
    out = {}
    tr, ir = [], []
    for i in range(ni):
        pos = [t for t in range(nt) if text_ids[t] == image_ids[i]]
        if not pos:
            tr.append(nt)
            continue
        best = max(sim[i][t] for t in pos)
        tr.append(sum(1 for t in range(nt) if t not in pos and sim[i][t] >= best))
    for t in range(nt):
        pos = [i for i in range(ni) if image_ids[i] == text_ids[t]]
        if not pos:
            ir.append(ni)
            continue
        best = max(sim[i][t] for i in pos)
        ir.append(sum(1 for i in range(ni) if i not in pos and sim[i][t] >= best))
    for name, ranks in (("tr", tr), ("ir", ir)):
        for k in ks:
            out[f"{name}_r{k}"] = 100.0 * sum(r < k for r in ranks) / len(ranks)
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_recall_matches_loop_reference_multi_caption(seed):
    g = torch.Generator().manual_seed(seed)
    ni, caps = 23, 3
    image_ids = torch.randperm(100, generator=g)[:ni]
    text_ids = image_ids.repeat_interleave(caps)[torch.randperm(ni * caps, generator=g)]
    # a noisy but informative similarity: positives get a bonus
    sim = torch.randn(ni, ni * caps, generator=g, dtype=torch.float64)
    sim = sim + 1.5 * (image_ids[:, None] == text_ids[None, :]).double()
    got = retrieval_recall(sim, image_ids, text_ids, ks=(1, 5, 10))
    ref = _ref_recall(sim.tolist(), image_ids.tolist(), text_ids.tolist(), (1, 5, 10))
    for k, v in ref.items():
        assert got[k].item() == pytest.approx(v), k
    assert got["r_mean"].item() == pytest.approx(sum(ref.values()) / len(ref))


def test_recall_perfect_and_constant_scores():
    ids = torch.arange(7)
    perfect = torch.eye(7) * 5
    r = retrieval_recall(perfect, ids, ids)
    assert all(r[k].item() == 100.0 for k in ("tr_r1", "ir_r1"))
    flat = torch.zeros(7, 7)
    r = retrieval_recall(flat, ids, ids, ks=(1, 7))
    assert r["tr_r1"].item() == 0.0 and r["ir_r7"].item() == 100.0


def test_query_without_positive_is_a_miss():
    ranks = retrieval_ranks(torch.randn(2, 3), torch.tensor([[True, False, False], [False, False, False]]))
    assert ranks[1].item() == 3


def test_recall_bad_inputs():
    with pytest.raises(ValueError, match="image_ids"):
        retrieval_recall(torch.randn(3, 4), torch.arange(2), torch.arange(4))
    with pytest.raises(TypeError, match="sim_i2t"):
        retrieval_recall(torch.zeros(3, 3, dtype=torch.long), torch.arange(3), torch.arange(3))
    with pytest.raises(ValueError, match="ks"):
        retrieval_recall(torch.randn(3, 3), torch.arange(3), torch.arange(3), ks=(0,))


def test_rerank_topk_against_reference():
    g = torch.Generator().manual_seed(3)
    q, c, k = 9, 13, 4
    sim = torch.randn(q, c, generator=g)
    itm = torch.randn(q, c, generator=g)
    calls = []

    def score(qi, ci):
        calls.append(qi.numel())
        return itm[qi, ci]

    out = rerank_topk(sim, k, score, chunk_size=5)
    assert max(calls) <= 5 and sum(calls) == q * k
    for row in range(q):
        top = sim[row].topk(k).indices.tolist()
        rest = [j for j in range(c) if j not in top]
        order = out[row].argsort(descending=True).tolist()
        # the re-scored candidates come first, in ITM order; the rest follow in ITC order
        assert order[:k] == sorted(top, key=lambda j: -itm[row, j].item())
        assert order[k:] == sorted(rest, key=lambda j: -sim[row, j].item())
        assert torch.equal(out[row, top], itm[row, top])
    assert torch.equal(rerank_topk(sim, 0, score), sim)
    added = rerank_topk(sim, c + 5, score, sim_weight=0.5)
    assert torch.allclose(added, 0.5 * sim + itm)
    with pytest.raises(ValueError, match="sim_weight"):
        rerank_topk(sim, 1, score, sim_weight=-1.0)
    with pytest.raises(ValueError, match="k must"):
        rerank_topk(sim, -1, score)


def test_recall_with_explicit_positives_equals_ids():
    g = torch.Generator().manual_seed(5)
    ids = torch.tensor([0, 1, 2, 3, 4])
    tids = torch.tensor([0, 0, 1, 2, 3, 4, 4])
    sim = torch.randn(5, 7, generator=g)
    a = retrieval_recall(sim, ids, tids)
    b = retrieval_recall(sim, positives=ids[:, None] == tids[None, :])
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="positives"):
        retrieval_recall(sim)
    with pytest.raises(ValueError, match="positives"):
        retrieval_recall(sim, positives=torch.ones(5, 6, dtype=torch.bool))


def test_itm_itc_score_is_the_itm_probability_or_log_odds_plus_weighted_itc():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(6, 2, generator=g, dtype=torch.float64)
    sim = torch.rand(6, generator=g, dtype=torch.float64) * 2 - 1
    p = torch.softmax(logits, -1)[:, 1]
    torch.testing.assert_close(itm_itc_score(logits, None, 0.0), p.float())
    got = itm_itc_score(logits, sim, 10.0)
    torch.testing.assert_close(got, (torch.log(p / (1 - p)) + 10.0 * sim).float(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="itc_sim"):
        itm_itc_score(logits, None, 1.0)
    with pytest.raises(ValueError, match="itc_sim"):
        itm_itc_score(logits, sim[:3], 1.0)
