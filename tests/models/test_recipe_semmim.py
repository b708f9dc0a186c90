from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from maskmm.models.semmim import SemMIM, SemMIMConfig, build_semmim, text_patch_similarity, tiny_config
from recipe_helpers import SMALL, gen, pair_batch, single_thread

from maskmm.masking import patch_masking_from_mask


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def _model(**changes) -> SemMIM:
    torch.manual_seed(0)
    changes.setdefault("encoder_overrides", SMALL)
    changes.setdefault("num_codes", 48)
    changes.setdefault("code_dim", 32)
    changes.setdefault("code_hidden_dim", 64)
    return build_semmim(tiny_config(**changes))


# --------------------------------------------------------------------------- config


def test_config_defaults_are_documented_choices():
    c = SemMIMConfig()
    assert c.losses == ("itc", "itm", "mim", "global_codes")  # MLM optional, off
    assert (c.teacher_temp, c.student_temp, c.center_momentum) == (0.04, 0.1, 0.9)
    assert (c.mask_ratio, c.mask_mode, c.num_codes) == (0.5, "token", 8192)


@pytest.mark.parametrize(
    ("changes", "err", "field"),
    [
        ({"mask_ratio": 1.0}, ValueError, "mask_ratio"),
        ({"mask_temperature": -1.0}, ValueError, "mask_temperature"),
        ({"teacher_temp": 0.0}, ValueError, "teacher_temp"),
        ({"num_codes": 0}, ValueError, "num_codes"),
        ({"mask_mode": "zero"}, ValueError, "mask_mode"),
        ({"itc": False, "itm": False, "mim": False, "global_codes": False}, ValueError, "every loss off"),
        ({"ema_decay": 1.5}, ValueError, "ema_decay"),
    ],
)
def test_config_rejects_bad_values(changes, err, field):
    with pytest.raises(err, match=field):
        SemMIMConfig(**changes)


def test_masked_modeling_needs_a_merged_fusion():
    with pytest.raises(ValueError, match="merged"):
        _model(encoder_overrides={**SMALL, "kind": "cross"})
    m = _model(encoder_overrides={**SMALL, "kind": "cross"}, mim=False, global_codes=False)
    assert tuple(m(*pair_batch(), generator=gen()).losses) == ("itc", "itm")


# --------------------------------------------------------------------------- forward


def test_forward_outputs_and_shapes():
    m = _model()
    images, ids, valid = pair_batch()
    out = m(images, ids, valid, torch.arange(5), generator=gen())
    assert tuple(out.losses) == ("itc", "itm", "mim", "global_codes")
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in out.losses.values())
    ref = sum(v.detach().double() for v in out.losses.values())
    assert torch.allclose(out.loss.detach().double(), ref, rtol=1e-6)
    assert all(not v.requires_grad for v in out.stats.values())
    assert out.image_mask.shape == (5, 16) and out.image_mask.sum(1).tolist() == [8] * 5
    assert out.patch_scores.shape == (5, 16) and out.patch_scores.dtype == torch.float32
    assert out.text_mask is None
    assert 0 < out.stats["mim/teacher_entropy"].item() < torch.log(torch.tensor(48.0)).item()


def _reference_scores(m: SemMIM, images, ids, valid) -> torch.Tensor:
    t = m.teacher.module
    with torch.no_grad():
        img = t.vision(images).last_hidden
        txt = t.text(ids, valid).last_hidden
        p = t.vision_proj(img[:, 1:]).double()
        q = t.text_proj(txt[:, 0]).double()
    return (p / p.norm(dim=-1, keepdim=True) * (q / q.norm(dim=-1, keepdim=True))[:, None]).sum(-1)


def test_text_guided_masking_hides_the_most_caption_relevant_patches():
    m = _model(mask_temperature=0.0)
    images, ids, valid = pair_batch()
    out = m(images, ids, valid, generator=gen())
    ref = _reference_scores(m, images, ids, valid)
    assert torch.allclose(out.patch_scores.double(), ref, atol=1e-5)
    top = torch.zeros_like(out.image_mask).scatter_(1, ref.topk(8, dim=1).indices, True)
    assert torch.equal(out.image_mask, top)
    # the scores follow the caption
    other = m(images, ids.roll(1, 0), valid.roll(1, 0), generator=gen()).patch_scores
    assert not torch.allclose(other, out.patch_scores)


def test_gumbel_temperature_randomises_the_mask():
    m = _model(mask_temperature=0.5)
    batch = pair_batch()
    a = m(*batch, generator=gen(1)).image_mask
    b = m(*batch, generator=gen(2)).image_mask
    assert not torch.equal(a, b)
    assert torch.equal(a, m(*batch, generator=gen(1)).image_mask)


def test_code_losses_match_an_independent_reference():
    m = _model(itc=False, itm=False).eval()  # eval: the centres stay fixed
    with torch.no_grad():
        m.patch_targets.center.normal_()
        m.global_targets.center.normal_()
    images, ids, valid = pair_batch()
    out = m(images, ids, valid, generator=gen())
    t, s = m.teacher.module, m.student
    with torch.no_grad():
        t_img = t.vision(images).last_hidden
        t_txt = t.text(ids, valid).last_hidden
        t_logits = t.prototypes(t.code_head(t.fusion(t_img, None, t_txt, valid).image)).double()
        v = s.vision(images, masking=patch_masking_from_mask(out.image_mask), mask_mode="token").last_hidden
        s_txt = s.text(ids, valid).last_hidden  # clean caption injected through fusion
        s_logits = s.prototypes(s.code_head(s.fusion(v, None, s_txt, valid).image)).double()
    q_cls = torch.softmax((t_logits[:, 0] - m.global_targets.center.double()) / 0.04, -1)
    q_patch = torch.softmax((t_logits[:, 1:] - m.patch_targets.center.double()) / 0.04, -1)
    logp = F.log_softmax(s_logits / 0.1, -1)
    ref_global = -(q_cls * logp[:, 0]).sum(-1).mean()
    ref_mim = -(q_patch * logp[:, 1:]).sum(-1)[out.image_mask].mean()
    assert torch.allclose(out.losses["global_codes"].double(), ref_global, rtol=1e-6, atol=1e-7)
    assert torch.allclose(out.losses["mim"].double(), ref_mim, rtol=1e-6, atol=1e-7)


def test_itm_scores_each_pair_and_its_only_negative():
    m = _model(itc=False, mim=False, global_codes=False)
    images, ids, valid = pair_batch(b=2)  # two pairs: each one's negative is the other
    out = m(images, ids, valid, generator=gen())
    s = m.student
    with torch.no_grad():
        img, txt = s.vision(images).last_hidden, s.text(ids, valid).last_hidden
        pairs = [(0, 0, 1), (1, 1, 1), (0, 1, 0), (1, 0, 0), (1, 0, 0), (0, 1, 0)]  # (image, text, label)
        terms = [
            -torch.log_softmax(
                s.itm_head(s.fusion(img[[a]], None, txt[[t]], valid[[t]]).text[:, 0]).double(), -1
            )[0, label]
            for a, t, label in pairs
        ]
    torch.testing.assert_close(out.losses["itm"].double(), torch.stack(terms).mean(), rtol=1e-5, atol=1e-6)


def test_mim_gradient_reaches_only_masked_patch_logits():
    m = _model(itc=False, itm=False, global_codes=False)
    kept = []

    def keep(module, args, output):
        output.retain_grad()
        kept.append(output)

    h = m.student.prototypes.register_forward_hook(keep)
    out = m(*pair_batch(), generator=gen())
    h.remove()
    out.loss.backward()
    (logits,) = kept
    g = logits.grad[:, 1:].abs().sum(-1)  # [B, N]
    assert torch.all(g[~out.image_mask] == 0) and torch.all(g[out.image_mask] > 0)
    assert torch.all(logits.grad[:, 0] == 0)


# --------------------------------------------------------------------------- momentum model


def test_teacher_gets_no_gradient_and_moves_after_update():
    m = _model()
    trainable = {id(p) for p in m.parameters()}
    teacher = m.teacher.module.state_dict()
    assert teacher and not any(id(t) in trainable or t.requires_grad for t in teacher.values())
    assert {"vision", "text", "fusion", "vision_proj", "text_proj", "code_head", "prototypes"} == {
        k.split(".")[0] for k in teacher
    }
    before = {k: v.clone() for k, v in teacher.items()}
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    out = m(*pair_batch(), generator=gen())
    out.loss.backward()
    assert all(t.grad is None for t in m.teacher.module.state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in m.teacher.module.state_dict().items())
    opt.step()
    m.update_teacher(0)
    student = dict(m.student.named_parameters())
    after = m.teacher.module.state_dict()
    for name in ("vision.blocks.0.attn.qkv.weight", "prototypes.weight_v", "fusion.layers.0.mlp.fc1.weight"):
        expected = 0.996 * before[name].double() + 0.004 * student[name].detach().double()
        assert torch.allclose(after[name].double(), expected, atol=1e-6), name
        assert not torch.equal(after[name], before[name]), name


def test_centres_update_in_training_mode_only():
    m = _model()
    batch = pair_batch()
    c0 = m.patch_targets.center.clone(), m.global_targets.center.clone()
    m.eval()
    m(*batch, generator=gen())
    assert torch.equal(m.patch_targets.center, c0[0]) and torch.equal(m.global_targets.center, c0[1])
    m.train()
    m(*batch, generator=gen())
    assert not torch.equal(m.patch_targets.center, c0[0]) and not torch.equal(m.global_targets.center, c0[1])


# --------------------------------------------------------------------------- training


def test_a_few_steps_decrease_the_total_loss():
    m = _model(itc_queue_size=0)  # a filling queue would change the ITC task between steps
    images, ids, valid = pair_batch(b=6)
    image_ids = torch.arange(6)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    totals = []
    for step in range(8):
        out = m(images, ids, valid, image_ids, generator=gen())
        assert all(torch.isfinite(v) for v in out.losses.values())
        totals.append(out.loss.item())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        m.update_teacher(step)
    assert min(totals[-2:]) < 0.9 * totals[0], totals


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"itm": False, "mim": False, "global_codes": False}, ("itc",)),
        ({"itc": False, "itm": False}, ("mim", "global_codes")),
        ({"mlm": True, "global_codes": False, "mask_mode": "drop"}, ("itc", "itm", "mlm", "mim")),
    ],
)
def test_switching_losses_off_is_a_config_change(changes, expected):
    m = _model(**changes)
    images, ids, valid = pair_batch()
    out = m(images, ids, valid, generator=gen())
    assert tuple(out.losses) == expected
    assert (out.text_mask is not None) == ("mlm" in expected)
    assert (out.image_mask is not None) == ("mim" in expected or "global_codes" in expected)
    out.loss.backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing  # every trainable parameter is used


def test_same_seed_same_result():
    m = _model(mlm=True).eval()
    batch = pair_batch()
    a = m(*batch, generator=gen(3))
    b = m(*batch, generator=gen(3))
    assert torch.equal(a.loss, b.loss)
    assert torch.equal(a.image_mask, b.image_mask) and torch.equal(a.text_mask, b.text_mask)


def test_bad_inputs_raise_naming_the_argument():
    m = _model()
    images, ids, valid = pair_batch()
    with pytest.raises(TypeError, match="text_valid"):
        m(images, ids, valid.long())
    with pytest.raises(ValueError, match="alpha"):
        m(images, ids, valid, alpha=1.5)
    with pytest.raises(ValueError, match="hardness"):
        m(images, ids, valid, itm_hardness=-0.5)
    with pytest.raises(ValueError, match="text_feat"):
        text_patch_similarity(torch.randn(2, 4, 8), torch.randn(2, 7))


def test_tiny_preset_builds_and_runs():
    torch.manual_seed(0)
    m = build_semmim(tiny_config())
    assert m.student.vision.config.num_patches == 64
    out = m(*pair_batch(b=2, size=64), generator=gen())
    assert out.image_mask.sum(1).tolist() == [32, 32]
    assert torch.isfinite(out.loss)


def test_bf16_autocast_keeps_fp32_losses():
    m = _model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(*pair_batch(), generator=gen())
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.losses.values())
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
