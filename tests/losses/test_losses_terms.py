"""maskmm.losses.terms: each term against a plain-torch reference (loss, stats and gradients)."""

from __future__ import annotations

import copy
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maskmm.losses import (
    CodePredictionTerm,
    ContrastiveTerm,
    FeatureRegressionTerm,
    FusionRegressionTerm,
    ImageTextContrastive,
    LossTerm,
    MaskedTokenTerm,
    MatchingTerm,
    PixelReconstructionTerm,
    sample_hard_negatives,
)
from maskmm.losses.terms import patch_states, pool_states, share_of_global_mean
from maskmm.losses.types import LossOutput
from maskmm.targets import TopKLayerTargets

B, N, L, D = 5, 7, 6, 9  # odd sizes
DT = torch.float64


def _rand(*shape: int, seed: int = 0, grad: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=DT).requires_grad_(grad)


def _linear(i: int, o: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(i, o).to(DT)


def _valid(seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, L + 1, (B,), generator=g)
    lengths[0] = L
    return torch.arange(L)[None] < lengths[:, None]


def _mask(rows: int, cols: int, seed: int, *, full_row: int | None = 0, empty_row: int | None = 1):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(rows, cols, generator=g) < 0.4
    if full_row is not None:
        m[full_row] = True
    if empty_row is not None:
        m[empty_row] = False
    return m


def _assert_same(out: LossOutput, ref: torch.Tensor, inputs: list[torch.Tensor], rtol: float = 1e-10) -> None:
    """Loss and gradients (w.r.t. ``inputs``) of a term equal those of the reference (fp64)."""
    atol = rtol * 1e-2
    torch.testing.assert_close(out.loss, ref, rtol=rtol, atol=atol)
    got = torch.autograd.grad(out.loss, inputs, retain_graph=True)
    want = torch.autograd.grad(ref, inputs)
    for i, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, rtol=rtol * 10, atol=atol, msg=lambda m, i=i: f"input {i}: {m}")


def _smooth_l1(d: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    a = d.abs()
    return torch.where(a < beta, 0.5 * a * a / beta, a - 0.5 * beta)


def _layer_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + eps)


# ------------------------------------------------------------------------------------ shared pieces


def test_pool_states_cls_and_masked_mean():
    x = _rand(B, L, D, grad=False)
    valid = _valid()
    valid[2] = False  # no valid token at all: the mean is 0
    torch.testing.assert_close(pool_states(x, valid, "cls"), x[:, 0])
    torch.testing.assert_close(pool_states(x, None, "mean"), x[:, 1:].mean(1))
    want = torch.stack(
        [x[i, 1:][valid[i, 1:]].mean(0) if valid[i, 1:].any() else torch.zeros(D, dtype=DT) for i in range(B)]
    )
    torch.testing.assert_close(pool_states(x, valid, "mean"), want)


def test_patch_states_and_global_share():
    x = _rand(B, 1 + N, D, grad=False)
    assert torch.equal(patch_states(x, N), x[:, 1:])
    assert patch_states(x, 0).shape == (B, 0, D)  # not x[:, -0:]
    with pytest.raises(ValueError, match="patch tokens last"):
        patch_states(x, N + 2)
    loss = torch.tensor(2.0, dtype=DT)
    out = LossOutput(loss, {})
    assert share_of_global_mean(out, torch.tensor(3), None).loss is loss  # one process: unchanged
    torch.testing.assert_close(
        share_of_global_mean(out, torch.tensor(3), torch.tensor(12)).loss, loss * 3 / 12
    )
    assert LossTerm().teacher_reads(0.5) == frozenset()


# ------------------------------------------------------------------------------------------- ITC


def _itc_ref(img_f, txt_f, temp, *, keys=None, alpha=0.0, ids=None):
    """Symmetric InfoNCE on L2-normalised features; keys: momentum features (else the online ones)."""
    qi, qt = F.normalize(img_f, dim=-1), F.normalize(txt_f, dim=-1)
    ki, kt = (qi, qt) if keys is None else (F.normalize(keys[0], dim=-1), F.normalize(keys[1], dim=-1))
    if ids is None:
        hard = torch.eye(len(qi), dtype=DT)
    else:
        hard = (ids[:, None] == ids[None]).to(DT)
        hard = hard / hard.sum(1, keepdim=True)
    t_i2t = t_t2i = hard
    if alpha > 0:
        t_i2t = alpha * torch.softmax(ki @ kt.t() / temp, 1) + (1 - alpha) * hard
        t_t2i = alpha * torch.softmax(kt @ ki.t() / temp, 1) + (1 - alpha) * hard
    l_i2t = -(t_i2t * F.log_softmax(qi @ kt.t() / temp, 1)).sum(1).mean()
    l_t2i = -(t_t2i * F.log_softmax(qt @ ki.t() / temp, 1)).sum(1).mean()
    return (l_i2t + l_t2i) / 2


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_contrastive_term_online_keys(pool):
    img, txt, valid = _rand(B, 1 + N, D, seed=1), _rand(B, L, D, seed=2), _valid()
    vp, tp = _linear(D, 3, 10), _linear(D, 3, 11)
    term = ContrastiveTerm(ImageTextContrastive(3, temperature=0.1).to(DT), vp, tp, pool=pool)
    ids = torch.tensor([0, 1, 0, 2, 3])
    out = term(img, txt, valid, image_ids=ids)
    temp = term.contrastive.temp.item()  # 0.1 in fp32
    ref = _itc_ref(vp(pool_states(img, None, pool)), tp(pool_states(txt, valid, pool)), temp, ids=ids)
    _assert_same(out, ref, [img, txt, vp.weight, tp.bias])
    assert term.teacher_reads(0.4) == frozenset()
    # precomputed features give the same loss; similarity() is the (single-process) scaled product
    feats = term.features(img, txt, valid)
    torch.testing.assert_close(term(img, txt, valid, image_ids=ids, features=feats).loss, out.loss)
    torch.testing.assert_close(term.similarity(*feats), (feats[0] @ feats[1].t() / temp).float())
    assert set(out.stats) == {"i2t_acc", "t2i_acc", "loss_i2t", "loss_t2i", "temperature"}


@pytest.mark.parametrize(("distill", "alpha"), [(True, 0.3), (False, 0.3), (True, 0.0)])
def test_contrastive_term_momentum_keys(distill, alpha):
    img, txt, valid = _rand(B, 1 + N, D, seed=1), _rand(B, L, D, seed=2), _valid()
    t_img, t_txt = _rand(B, 1 + N, D, seed=3, grad=False), _rand(B, L, D, seed=4, grad=False)
    vp, tp, vp_m, tp_m = _linear(D, 3, 10), _linear(D, 3, 11), _linear(D, 3, 12), _linear(D, 3, 13)
    itc = ImageTextContrastive(3, temperature=0.2).to(DT)
    term = ContrastiveTerm(itc, vp, tp, pool="mean", momentum=(vp_m, tp_m), distill=distill)
    assert term.teacher_reads() == {"teacher_image", "teacher_text"}
    assert not any(n.startswith("momentum") for n in dict(term.named_parameters()))  # the teacher's
    out = term(img, txt, valid, teacher_image=t_img, teacher_text=t_txt, alpha=alpha)
    keys = (vp_m(pool_states(t_img, None, "mean")), tp_m(pool_states(t_txt, valid, "mean")))
    ref = _itc_ref(
        vp(pool_states(img, None, "mean")),
        tp(pool_states(txt, valid, "mean")),
        itc.temp.item(),
        keys=keys,
        alpha=alpha if distill else 0.0,
    )
    _assert_same(out, ref, [img, txt, vp.weight, tp.weight])
    assert vp_m.weight.grad is None  # no gradient into the momentum projections
    with pytest.raises(ValueError, match="teacher_image"):
        term(img, txt, valid)


def test_contrastive_term_checks():
    itc, p = ImageTextContrastive(3), nn.Linear(D, 3)
    with pytest.raises(ValueError, match="distill=True needs momentum"):
        ContrastiveTerm(itc, p, p, distill=True)
    with pytest.raises(TypeError, match="ImageTextContrastive"):
        ContrastiveTerm(object(), p, p)
    with pytest.raises(ValueError, match="pool"):
        ContrastiveTerm(itc, p, p, pool="max")


# ------------------------------------------------------------------------------------------- ITM


class _FusionOut(NamedTuple):
    text: torch.Tensor
    image: torch.Tensor | None


class _ToyFusion(nn.Module):
    """Text states mixed with the mean image state and masked by validity (a stand-in fusion)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = _linear(D, D, 20)

    def forward(self, image, image_valid, text, text_valid):
        w = text_valid[..., None].to(text.dtype)
        return _FusionOut(torch.tanh(self.lin(text + image.mean(1, keepdim=True))) * w, None)


def _itm_ref(fusion, head, img, txt, valid, negs):
    rows = torch.arange(len(img))
    image_rows = torch.cat([rows, negs.image_idx, rows])
    text_rows = torch.cat([rows, rows, negs.text_idx])
    logits = head(fusion(img[image_rows], None, txt[text_rows], valid[text_rows]).text[:, 0])
    labels = torch.cat([torch.ones(len(img)), torch.zeros(2 * len(img))]).long()
    keep = torch.cat([torch.ones(len(img), dtype=torch.bool), ~negs.image_fallback, ~negs.text_fallback])
    return F.cross_entropy(logits, labels, reduction="none")[keep].mean()


@pytest.mark.parametrize(
    ("ids", "hardness", "with_sim"),
    [(None, 1.0, True), ([0, 1, 0, 2, 3], 0.5, True), (None, 1.0, False), ([4, 4, 4, 4, 4], 1.0, True)],
)
def test_matching_term_matches_a_plain_reference(ids, hardness, with_sim):
    img, txt, valid = _rand(B, 1 + N, D, seed=1), _rand(B, L, D, seed=2), _valid()
    fusion, head = _ToyFusion(), _linear(D, 2, 21)
    term = MatchingTerm(fusion, head)
    image_ids = None if ids is None else torch.tensor(ids)
    sim = _rand(B, B, seed=5, grad=False).float() * 3 if with_sim else None
    out = term(
        img,
        txt,
        valid,
        similarity=sim,
        image_ids=image_ids,
        generator=torch.Generator().manual_seed(9),
        hardness=hardness,
    )
    s = sim if sim is not None else torch.zeros(B, B)
    negs = sample_hard_negatives(
        s, s.t(), image_ids, generator=torch.Generator().manual_seed(9), return_flags=True, hardness=hardness
    )
    ref = _itm_ref(fusion, head, img, txt, valid, negs)
    _assert_same(out, ref, [img, txt, fusion.lin.weight, head.weight])
    assert set(out.stats) == {"accuracy", "pos_acc", "neg_acc"}
    if ids == [4, 4, 4, 4, 4]:  # no negative anywhere: the positives alone are scored
        assert negs.image_fallback.all()


# ------------------------------------------------------------------------------------------- MLM


@pytest.mark.parametrize(("distill", "alpha"), [(False, 0.0), (True, 0.4), (True, 0.0)])
def test_masked_token_term_matches_a_plain_reference(distill, alpha):
    v = 11
    states = _rand(B, L, D, seed=1)
    head = _linear(D, v, 30)
    mask = _mask(B, L, 4)
    labels = torch.where(mask, torch.randint(0, v, (B, L), generator=torch.Generator().manual_seed(2)), -100)
    m = int(mask.sum())
    teacher = _rand(m, v, seed=6, grad=False)
    term = MaskedTokenTerm(head, distill=distill)
    reads = term.teacher_reads(alpha)
    assert reads == ({"teacher_logits"} if distill and alpha > 0 else set())
    out = term(states, labels, teacher_logits=teacher if reads else None, alpha=alpha)
    logits = head(states[mask])
    total = (1 - alpha if reads else 1.0) * F.cross_entropy(logits, labels[mask], reduction="sum")
    if reads:
        total = total + alpha * -(torch.softmax(teacher, -1) * F.log_softmax(logits, -1)).sum()
    _assert_same(out, total / m, [states, head.weight])
    assert out.stats["num_masked"] == m
    # a global count turns the local mean into this rank's share of the global mean
    shared = term(states, labels, teacher_logits=teacher, alpha=alpha, global_count=torch.tensor(3 * m))
    torch.testing.assert_close(shared.loss, out.loss / 3)
    if reads:
        with pytest.raises(ValueError, match="teacher_logits"):
            term(states, labels, alpha=alpha)


def test_masked_token_term_nothing_masked_is_zero():
    states = _rand(B, L, D, seed=1)
    head = _linear(D, 11, 30)
    out = MaskedTokenTerm(head)(states, torch.full((B, L), -100), global_count=torch.tensor(0))
    assert out.loss.item() == 0.0
    (g,) = torch.autograd.grad(out.loss, [states])
    assert torch.equal(g, torch.zeros_like(g))


# ------------------------------------------------------------------------------------------- MRM


def _mrm_ref(pred, target, mask, beta=1.0):
    per_token = _smooth_l1(pred - target, beta).sum(-1) / pred.shape[-1] ** 0.5
    return per_token[mask].mean()


@pytest.mark.parametrize("text_only", [False, True])
def test_fusion_regression_term_matches_a_plain_reference(text_only):
    valid = _valid()
    image_mask, text_mask = _mask(B, N, 7), _mask(B, L, 8, full_row=2, empty_row=0) & valid
    fused = _FusionOut(_rand(B, L, D, seed=1), None if text_only else _rand(B, 1 + N, D, seed=2))
    layers = [
        _FusionOut(
            _rand(B, L, D, seed=10 + i, grad=False), None if text_only else _rand(B, 1 + N, D, seed=20 + i)
        )
        for i in range(2)
    ]
    head = _linear(D, D, 40)
    term = FusionRegressionTerm(head, TopKLayerTargets(2, layer_norm="layer"), beta=0.5)
    assert term.teacher_reads() == {"teacher_layers"}
    counts = (torch.tensor(4 * int(image_mask.sum())), torch.tensor(4 * int(text_mask.sum())))
    out = term(fused, image_mask, text_mask, valid, teacher_layers=layers, global_counts=counts)
    if text_only:
        states, mask, keep = fused.text, text_mask, valid
        per_layer = [h.text for h in layers]
        n_global = counts[1]
    else:
        states = torch.cat([fused.image[:, 1:], fused.text], 1)
        mask = torch.cat([image_mask, text_mask], 1)
        keep = torch.cat([torch.ones_like(image_mask), valid], 1)
        per_layer = [torch.cat([h.image[:, 1:], h.text], 1) for h in layers]
        n_global = counts[0] + counts[1]
    target = sum(_layer_norm(x) * keep[..., None] for x in per_layer) / 2
    ref = _mrm_ref(head(states), target, mask, beta=0.5) * mask.sum() / n_global
    inputs = [fused.text, head.weight] + ([] if text_only else [fused.image])
    _assert_same(out, ref, inputs, rtol=1e-6)  # the targets are computed in fp32
    assert out.stats["num_masked"] == mask.sum()
    with pytest.raises(ValueError, match="teacher_layers"):
        term(fused, image_mask, text_mask, valid, teacher_layers=[])


# ------------------------------------------------------------------------------------------- MIM


@pytest.mark.parametrize("target_norm", [True, False])
def test_feature_regression_term_matches_a_plain_reference(target_norm):
    states, teacher = _rand(B, 1 + N, D, seed=1), _rand(B, 1 + N, 4, seed=2, grad=False)
    mask = _mask(B, N, 3)
    decoder = _linear(D, 4, 50)
    term = FeatureRegressionTerm(decoder, target_norm=target_norm)
    assert term.teacher_reads() == {"teacher_image"}
    out = term(states, mask, teacher_image=teacher)
    target = _layer_norm(teacher[:, 1:]) if target_norm else teacher[:, 1:]
    _assert_same(out, _mrm_ref(decoder(states[:, 1:]), target, mask), [states, decoder.weight])
    mse = FeatureRegressionTerm(decoder, kind="mse", scale_by_dim=False, target_norm=False)
    got = mse(states, mask, teacher_image=teacher, global_count=torch.tensor(2 * int(mask.sum())))
    ref = ((decoder(states[:, 1:]) - teacher[:, 1:]) ** 2).mean(-1)[mask].mean() / 2
    _assert_same(got, ref, [states, decoder.bias])


# ------------------------------------------------------------------------------- pixel and codes


def test_pixel_reconstruction_term_patch_layout_with_decoder():
    p = 12
    states, target = _rand(B, 1 + N, D, seed=1), _rand(B, N, p, seed=2, grad=False)
    mask = _mask(B, N, 5)
    decoder = _linear(D, p, 60)
    out = PixelReconstructionTerm(decoder, kind="l1")(states, target, mask)
    ref = (decoder(states[:, 1:]) - target).abs()[mask].mean()
    _assert_same(out, ref, [states, decoder.weight])
    assert out.stats["num_masked"] == mask.sum()
    assert PixelReconstructionTerm().teacher_reads() == frozenset()


def test_pixel_reconstruction_term_pixel_layout():
    pred, image = _rand(B, 3, 7, 5, seed=1), _rand(B, 3, 7, 5, seed=2, grad=False)
    mask = torch.rand(B, 7, 5, generator=torch.Generator().manual_seed(3)) < 0.5
    mask[0] = True
    mask[1] = False
    term = PixelReconstructionTerm(kind="mse", layout="pixel")
    out = term(pred, image, mask, global_count=torch.tensor(int(mask.sum()) * 2))
    ref = ((pred - image) ** 2).permute(0, 2, 3, 1)[mask].mean() / 2
    _assert_same(out, ref, [pred])
    with pytest.raises(ValueError, match="normalize_target"):
        PixelReconstructionTerm(layout="pixel", normalize_target=True)


def test_code_prediction_term_local_and_global():
    k = 8
    states, teacher = _rand(B, 1 + N, D, seed=1), torch.softmax(_rand(B, N, k, seed=2, grad=False), -1)
    mask = _mask(B, N, 4)
    head = _linear(D, k, 70)
    term = CodePredictionTerm(head, student_temperature=0.2)
    out = term(states, teacher, mask)
    per_pos = -(teacher * F.log_softmax(head(states[:, 1:]) / 0.2, -1)).sum(-1)
    _assert_same(out, per_pos[mask].mean(), [states, head.weight])
    assert out.stats["num_scored"] == mask.sum()
    # global codes: [B, K] teacher logits sharpened by a teacher temperature, every row scored
    cls, t_logits = _rand(B, k, seed=3), _rand(B, k, seed=4, grad=False)
    glob = CodePredictionTerm(student_temperature=0.1, teacher_temperature=0.05)
    out = glob(cls, t_logits)
    ref = -(torch.softmax(t_logits / 0.05, -1) * F.log_softmax(cls / 0.1, -1)).sum(-1).mean()
    _assert_same(out, ref, [cls])


def test_terms_are_modules_that_own_their_parts():
    head = _linear(D, 11, 30)
    term = MaskedTokenTerm(head)
    assert isinstance(term, LossTerm) and isinstance(term, nn.Module)
    assert [n for n, _ in term.named_parameters()] == ["head.weight", "head.bias"]
    assert "distill=False" in repr(copy.deepcopy(term))


def test_matching_pair_state_cls_or_mean_of_the_fused_states():
    from types import SimpleNamespace

    from maskmm.losses.terms import fused_text_cls

    g = torch.Generator().manual_seed(11)
    img, txt = torch.randn(3, 4, 5, generator=g), torch.randn(3, 6, 5, generator=g)
    tv = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    iv = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 1, 0]], dtype=torch.bool)

    def merged(i, i_valid, t, t_valid):  # returns both streams, as merged fusion does
        return SimpleNamespace(text=t * 2.0, image=i * 3.0)

    def cross(i, i_valid, t, t_valid):  # text stream only
        return SimpleNamespace(text=t * 2.0, image=None)

    assert torch.equal(fused_text_cls(merged)(img, iv, txt, tv), txt[:, 0] * 2.0)
    for fusion, with_image in ((merged, True), (cross, False)):
        got = fused_text_cls(fusion, "mean")(img, iv, txt, tv)
        for b in range(3):
            rows = [txt[b, j] * 2.0 for j in range(6) if tv[b, j]]
            if with_image:
                rows += [img[b, j] * 3.0 for j in range(4) if iv[b, j]]
            torch.testing.assert_close(got[b], torch.stack(rows).mean(0))
    every_image_token = fused_text_cls(merged, "mean")(img, None, txt, tv)
    torch.testing.assert_close(every_image_token[1], torch.cat([txt[1] * 2.0, img[1] * 3.0]).mean(0))
    with pytest.raises(ValueError, match="pool"):
        fused_text_cls(merged, "max")
