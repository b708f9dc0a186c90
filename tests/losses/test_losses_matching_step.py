"""The whole ITM step (hard negatives -> fusion -> head -> loss) against a per-pair reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from maskmm.losses import hard_negative_matching, sample_hard_negatives

B, LI, LT, DV, DT, D = 7, 5, 6, 8, 10, 12


class _ToyFusion(nn.Module):
    """A small differentiable pair encoder honouring both validity masks: ``[N, D]``."""

    def __init__(self) -> None:
        super().__init__()
        self.wi = nn.Linear(DV, D)
        self.wt = nn.Linear(DT, D)
        self.calls = 0

    def forward(self, img, img_valid, txt, txt_valid):
        self.calls += 1
        wi = torch.ones(img.shape[:2], dtype=torch.bool) if img_valid is None else img_valid
        wi = wi[..., None].to(img.dtype)
        wt = txt_valid[..., None].to(txt.dtype)
        pi = (img * wi).sum(1) / wi.sum(1).clamp(min=1)
        pt = (txt * wt).sum(1) / wt.sum(1).clamp(min=1)
        return torch.tanh(self.wi(pi) * self.wt(pt) + self.wt(txt[:, 0]))


def _setup(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    fusion, head = _ToyFusion().to(dtype), nn.Linear(D, 2).to(dtype)
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(B, LI, DV, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    txt = torch.randn(B, LT, DT, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    img_valid = torch.rand(B, LI, generator=g) < 0.7
    img_valid[:, 0] = True
    txt_valid = torch.arange(LT)[None] < torch.randint(1, LT + 1, (B,), generator=g)[:, None]
    ids = torch.tensor([0, 1, 1, 2, 3, 3, 3])
    return fusion, head, img, img_valid, txt, txt_valid, ids


def _reference(fusion, head, img, img_valid, txt, txt_valid, neg_txt, neg_img, scored_neg):
    """Pair by pair, float64: mean CE over the positives and the scored negatives."""
    terms = []
    for i in range(B):
        scored_i = bool(scored_neg[i])
        rows = [(i, i, 1, True), (i, int(neg_txt[i]), 0, scored_i), (int(neg_img[i]), i, 0, scored_i)]
        for a, t, label, scored in rows:
            rep = fusion(img[a : a + 1], img_valid[a : a + 1], txt[t : t + 1], txt_valid[t : t + 1])
            logp = torch.log_softmax(head(rep).double(), -1)[0]
            if scored:
                terms.append(-logp[label])
    return torch.stack(terms).mean()


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


def test_peaked_similarities_give_the_hardest_other_id_negative_with_grads() -> None:
    fusion, head, img, img_valid, txt, txt_valid, ids = _setup()
    g = torch.Generator().manual_seed(3)
    same = ids[:, None] == ids[None, :]
    sims = []
    for _ in range(2):  # one boosted other-id entry per row; same-id entries boosted even more
        s = torch.randn(B, B, generator=g, dtype=torch.float64)
        target = torch.stack([torch.multinomial((~same[i]).double(), 1, generator=g)[0] for i in range(B)])
        s[torch.arange(B), target] += 60.0
        sims.append(s.masked_fill(same, 200.0))
    sim_i2t, sim_t2i = sims
    neg_txt = [max((j for j in range(B) if ids[j] != ids[i]), key=lambda j: sim_i2t[i, j]) for i in range(B)]
    neg_img = [max((j for j in range(B) if ids[j] != ids[i]), key=lambda j: sim_t2i[i, j]) for i in range(B)]

    out = hard_negative_matching(
        img, img_valid, txt, txt_valid, sim_i2t, sim_t2i, fuse=fusion, head=head, image_ids=ids
    )
    assert fusion.calls == 1  # the 3B pairs go through the fusion in one call
    params = (img, txt, fusion.wi.weight, fusion.wt.weight, head.weight)
    ref = _reference(fusion, head, img, img_valid, txt, txt_valid, neg_txt, neg_img, [True] * B)
    assert out.loss.dtype == torch.float64
    torch.testing.assert_close(out.loss, ref, rtol=1e-10, atol=1e-12)
    for got, want in zip(_grads(out.loss, *params), _grads(ref, *params)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert set(out.stats) == {"accuracy", "pos_acc", "neg_acc"}


def test_seeded_draws_match_the_sampler_and_are_deterministic() -> None:
    fusion, head, img, img_valid, txt, txt_valid, ids = _setup(seed=1)
    gs = torch.Generator().manual_seed(5)
    sim_i2t = torch.randn(B, B, generator=gs, dtype=torch.float64) * 2

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        args = (img, img_valid, txt, txt_valid, sim_i2t)
        return hard_negative_matching(*args, fuse=fusion, head=head, image_ids=ids, generator=g)

    a, b = run(11), run(11)
    assert torch.equal(a.loss, b.loss)
    negs = sample_hard_negatives(sim_i2t, sim_i2t.t(), ids, generator=torch.Generator().manual_seed(11))
    assert (ids[negs[0]] != ids).all() and (ids[negs[1]] != ids).all()
    ref = _reference(fusion, head, img, img_valid, txt, txt_valid, negs[0], negs[1], [True] * B)
    torch.testing.assert_close(a.loss, ref, rtol=1e-10, atol=1e-12)
    c = run(12)
    assert not torch.equal(a.loss, c.loss)


def test_without_similarities_draws_uniformly_among_other_ids() -> None:
    fusion, head, img, _, txt, txt_valid, ids = _setup(seed=2)  # image_valid=None: all valid
    seen = []

    def fuse(i, iv, t, tv):
        seen.append((i.detach(), t.detach()))
        return fusion(i, iv, t, tv)

    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        hard_negative_matching(
            img, None, txt, txt_valid, None, fuse=fuse, head=head, image_ids=ids, generator=g
        )
    drawn = set()
    for i_rows, t_rows in seen:
        assert torch.equal(i_rows[:B], img.detach()) and torch.equal(t_rows[:B], txt.detach())
        # recover the drawn indices from the rows themselves (ALBEF's order: (neg image, text) rows
        # B..2B, (image, neg text) rows 2B..3B)
        assert torch.equal(t_rows[B : 2 * B], txt.detach()) and torch.equal(i_rows[2 * B :], img.detach())
        ni = [int((i_rows[B + k] == img.detach()).flatten(1).all(1).nonzero()[0]) for k in range(B)]
        nt = [int((t_rows[2 * B + k] == txt.detach()).flatten(1).all(1).nonzero()[0]) for k in range(B)]
        assert all(ids[j] != ids[k] for k, j in enumerate(nt)) and all(
            ids[j] != ids[k] for k, j in enumerate(ni)
        )
        drawn.update((k, j) for k, j in enumerate(nt))
    assert len(drawn) > B  # not one fixed choice per row


def test_rows_without_negative_score_only_the_positive() -> None:
    fusion, head, img, img_valid, txt, txt_valid, _ = _setup(seed=3)
    ids = torch.zeros(B, dtype=torch.long)  # one image for every caption: no negative exists
    sim = torch.randn(B, B, dtype=torch.float64)
    out = hard_negative_matching(img, img_valid, txt, txt_valid, sim, fuse=fusion, head=head, image_ids=ids)
    pos = torch.log_softmax(head(fusion(img, img_valid, txt, txt_valid)), -1)[:, 1]
    torch.testing.assert_close(out.loss, -pos.mean(), rtol=1e-10, atol=1e-12)
    one = hard_negative_matching(
        img[:1], img_valid[:1], txt[:1], txt_valid[:1], sim[:1, :1], fuse=fusion, head=head
    )
    torch.testing.assert_close(one.loss, -pos[0], rtol=1e-10, atol=1e-12)


def test_empty_batch_gives_zero_loss_without_calling_the_fusion() -> None:
    fusion, head, img, img_valid, txt, txt_valid, _ = _setup()
    out = hard_negative_matching(
        img[:0], img_valid[:0], txt[:0], txt_valid[:0], torch.zeros(0, 0), fuse=fusion, head=head
    )
    assert fusion.calls == 0 and out.loss.item() == 0.0
    out.loss.backward()
    assert torch.equal(img.grad, torch.zeros_like(img))


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_low_precision_states_give_an_fp32_loss(dtype, tol) -> None:
    fusion, head, img, img_valid, txt, txt_valid, ids = _setup(seed=4)
    sim = torch.randn(B, B)
    negs = sample_hard_negatives(sim, sim.t(), ids, generator=torch.Generator().manual_seed(0))
    assert (ids[negs[0]] != ids).all() and (ids[negs[1]] != ids).all()  # every row is scored
    with torch.no_grad():  # pair-by-pair float64 reference, before the cast
        ref = _reference(fusion, head, img, img_valid, txt, txt_valid, negs[0], negs[1], [True] * B)
    fusion.to(dtype), head.to(dtype)
    g = torch.Generator().manual_seed(0)
    out = hard_negative_matching(
        img.detach().to(dtype),
        img_valid,
        txt.detach().to(dtype),
        txt_valid,
        sim,
        fuse=fusion,
        head=head,
        image_ids=ids,
        generator=g,
    )
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss.double(), ref, rtol=tol, atol=tol)


def test_bad_inputs_raise_naming_the_argument() -> None:
    fusion, head, img, img_valid, txt, txt_valid, ids = _setup()
    sim = torch.zeros(B, B)
    kw = {"fuse": fusion, "head": head}
    with pytest.raises(ValueError, match="text_valid"):
        hard_negative_matching(img, img_valid, txt, txt_valid[:, :-1], sim, **kw)
    with pytest.raises(TypeError, match="image_valid"):
        hard_negative_matching(img, img_valid.long(), txt, txt_valid, sim, **kw)
    with pytest.raises(ValueError, match="text_states"):
        hard_negative_matching(img, img_valid, txt[:-1], txt_valid[:-1], sim, **kw)
    with pytest.raises(ValueError, match="sim_i2t"):
        hard_negative_matching(img, img_valid, txt, txt_valid, sim[:-1], **kw)
    with pytest.raises(ValueError, match="sim_t2i"):
        hard_negative_matching(img, img_valid, txt, txt_valid, None, sim, **kw)
    with pytest.raises(ValueError, match="image_ids"):
        hard_negative_matching(img, img_valid, txt, txt_valid, sim, image_ids=ids[:-1], **kw)
    with pytest.raises(TypeError, match="head"):
        hard_negative_matching(img, img_valid, txt, txt_valid, sim, fuse=fusion, head=None)
    with pytest.raises(ValueError, match="logits"):
        hard_negative_matching(
            img, img_valid, txt, txt_valid, sim, fuse=fusion, head=nn.Linear(D, 3).double()
        )
