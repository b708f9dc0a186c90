from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from maskmm.models.semmim.builder import build_model
from maskmm.models.semmim.config import PRESET_DIR, SemMIMConfig, load_config
from maskmm.models.semmim.model import SemMIM
from maskmm.models.semmim.scores import text_patch_similarity
from recipe_helpers import (
    RUN,
    SMALL,
    VOCAB,
    check_cli_train_resume_eval,
    gen,
    pair_batch,
    single_thread,
)

from maskmm.masking import patch_masking_from_mask
from maskmm.training.recipe import get_recipe

#: The old test settings: 48 codes from a 32-wide head, ALBEF ITC (momentum keys, queue 32, soft
#: targets), mask tokens at the ViT input.
CODES = [
    "codes.num_codes=48",
    "codes.dim=32",
    "codes.hidden_dim=64",
    "itc.momentum_keys=true",
    "itc.queue_size=32",
    "itc.pool=cls",
    "image_masking.mode=token",
]


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def _cfg(*overrides: str) -> SemMIMConfig:
    return load_config("tiny", [*SMALL, *CODES, *overrides])


def _model(*overrides: str) -> SemMIM:
    torch.manual_seed(0)
    return build_model(_cfg(*overrides), vocab_size=VOCAB)


# --------------------------------------------------------------------------- config


def test_config_defaults_and_base_preset_are_the_documented_choices():
    c = SemMIMConfig()
    assert c.losses.enabled() == ("itc", "itm", "mim", "global_codes")  # MLM optional, off
    assert (c.codes.teacher_temp, c.codes.student_temp, c.codes.center_momentum) == (0.04, 0.1, 0.9)
    assert (c.image_masking.ratio, c.image_masking.mode, c.codes.num_codes) == (0.5, "token", 8192)
    assert (c.ema.decay, c.itc.momentum_keys, c.itc.queue_size, c.text_masking.ratio) == (
        0.996,
        True,
        4096,
        0.15,
    )
    base = load_config("base")
    for section in ("codes", "image_masking", "losses", "ema", "itc", "text_masking"):
        assert getattr(base, section) == getattr(c, section), section
    assert base.model.fusion == "merged" and base.itm.hardness_at(0) == 1.0


@pytest.mark.parametrize("name", ["tiny", "base"])
def test_presets_spell_out_every_field(name):
    import yaml

    cfg = load_config(name)
    assert cfg.name == name and get_recipe("semmim").presets() == ["base", "tiny"]
    raw = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text())
    full = SemMIMConfig()
    for f in dataclasses.fields(full):
        section = getattr(full, f.name)
        if dataclasses.is_dataclass(section):  # the recipe's own sections in full, shared ones in part
            fields = {g.name for g in dataclasses.fields(section)}
            assert set(raw[f.name]) <= fields, f.name
            if type(section).__module__ == SemMIMConfig.__module__:
                assert set(raw[f.name]) == fields, f.name


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("image_masking.ratio=1.0", "image_masking.ratio"),
        ("image_masking.temperature=-1.0", "image_masking.temperature"),
        ("image_masking.mode=zero", "image_masking.mode"),
        ("codes.teacher_temp=0.0", "codes.teacher_temp"),
        ("codes.num_codes=0", "codes.num_codes"),
        ("codes.center_momentum=1.5", "codes.center_momentum"),
        ("ema.decay=1.5", "ema.decay"),
        ("text_masking.ratio=1.0", "text_masking.ratio"),
        ("losses.global_codes_weight=-1", "losses.global_codes_weight"),
        ("model.fusion=cross", "model.fusion"),  # the code losses read fused image states
        ("model.image_size=64", "data.image_size"),
    ],
)
def test_config_errors_name_the_field(override, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        _cfg(override)


def test_every_loss_off_is_an_error_and_cross_fusion_serves_itc_itm():
    with pytest.raises(ValueError, match="every loss off"):
        _cfg(*(f"losses.{n}=false" for n in ("itc", "itm", "mim", "global_codes")))
    m = _model("model.fusion=cross", "losses.mim=false", "losses.global_codes=false")
    assert tuple(m.compute(*pair_batch(), generator=gen()).losses) == ("itc", "itm")


# --------------------------------------------------------------------------- forward


def test_forward_outputs_and_shapes():
    m = _model()
    images, ids, valid = pair_batch()
    out = m.compute(images, ids, valid, torch.arange(5), generator=gen())
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
        q = t.text_proj(m.pool_text(txt, valid)).double()
    return (p / p.norm(dim=-1, keepdim=True) * (q / q.norm(dim=-1, keepdim=True))[:, None]).sum(-1)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_text_guided_masking_hides_the_most_caption_relevant_patches(pool):
    m = _model("image_masking.temperature=0.0", f"itc.pool={pool}")
    images, ids, valid = pair_batch()
    out = m.compute(images, ids, valid, generator=gen())
    ref = _reference_scores(m, images, ids, valid)
    assert torch.allclose(out.patch_scores.double(), ref, atol=1e-5)
    top = torch.zeros_like(out.image_mask).scatter_(1, ref.topk(8, dim=1).indices, True)
    assert torch.equal(out.image_mask, top)
    # the scores follow the caption
    other = m.compute(images, ids.roll(1, 0), valid.roll(1, 0), generator=gen()).patch_scores
    assert not torch.allclose(other, out.patch_scores)


def test_gumbel_temperature_randomises_the_mask():
    m = _model("image_masking.temperature=0.5")
    batch = pair_batch()
    a = m.compute(*batch, generator=gen(1)).image_mask
    b = m.compute(*batch, generator=gen(2)).image_mask
    assert not torch.equal(a, b)
    assert torch.equal(a, m.compute(*batch, generator=gen(1)).image_mask)


@pytest.mark.parametrize("mode", ["token", "drop"])
def test_code_losses_match_an_independent_reference(mode):
    m = _model("losses.itc=false", "losses.itm=false", f"image_masking.mode={mode}").eval()  # centres fixed
    with torch.no_grad():
        m.patch_targets.center.normal_()
        m.global_targets.center.normal_()
    images, ids, valid = pair_batch()
    out = m.compute(images, ids, valid, generator=gen())
    t, s = m.teacher.module, m.student
    with torch.no_grad():
        t_img = t.vision(images).last_hidden
        t_txt = t.text(ids, valid).last_hidden
        t_logits = t.prototypes(t.code_head(t.fusion(t_img, None, t_txt, valid).image)).double()
        v = s.vision.encode_masked_full(images, patch_masking_from_mask(out.image_mask), mode)
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
    m = _model("losses.itc=false", "losses.mim=false", "losses.global_codes=false")
    images, ids, valid = pair_batch(b=2)  # two pairs: each one's negative is the other
    out = m.compute(images, ids, valid, generator=gen())
    s = m.student
    with torch.no_grad():
        img, txt = s.vision(images).last_hidden, s.text(ids, valid).last_hidden
        pairs = [(0, 0, 1), (1, 1, 1), (0, 1, 0), (1, 0, 0), (1, 0, 0), (0, 1, 0)]  # (image, text, label)
        terms = [
            -torch.log_softmax(m.itm_logits(img[[a]], txt[[t]], valid[[t]]).double(), -1)[0, label]
            for a, t, label in pairs
        ]
    assert torch.allclose(out.losses["itm"].double(), torch.stack(terms).mean(), rtol=1e-5, atol=1e-6)


def test_online_itc_keys_match_an_independent_reference():
    m = _model("itc.momentum_keys=false", "itc.queue_size=0", "itc.pool=mean", "losses.itm=false")
    images, ids, valid = pair_batch()
    out = m.compute(images, ids, valid, generator=gen())
    s = m.student
    with torch.no_grad():
        zi = F.normalize(s.vision_proj(s.vision(images).last_hidden[:, 1:].mean(1)).double(), dim=-1)
        zt = F.normalize(s.text_proj(m.pool_text(s.text(ids, valid).last_hidden, valid)).double(), dim=-1)
        sim = zi @ zt.t() / m.itc_loss.temp.double()
        target = torch.arange(5)
        ref = (F.cross_entropy(sim, target) + F.cross_entropy(sim.t(), target)) / 2
    assert torch.allclose(out.losses["itc"].double(), ref, rtol=1e-5, atol=1e-6)
    # the momentum model still serves the codes and the masking scores, not ITC
    assert {k.split(".")[0] for k in m.teacher.module.state_dict()} >= {"vision", "code_head", "prototypes"}


def test_mim_gradient_reaches_only_masked_patch_logits():
    m = _model("losses.itc=false", "losses.itm=false", "losses.global_codes=false")
    kept = []

    def keep(module, args, output):
        output.retain_grad()
        kept.append(output)

    h = m.student.prototypes.register_forward_hook(keep)
    out = m.compute(*pair_batch(), generator=gen())
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
    out = m.compute(*pair_batch(), generator=gen())
    out.loss.backward()
    assert all(t.grad is None for t in m.teacher.module.state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in m.teacher.module.state_dict().items())
    opt.step()
    m.after_optimizer_step(0)  # the recipe protocol's hook: the EMA update
    student = dict(m.student.named_parameters())
    after = m.teacher.module.state_dict()
    for name in ("vision.blocks.0.attn.qkv.weight", "prototypes.weight_v", "fusion.layers.0.mlp.fc1.weight"):
        expected = 0.996 * before[name].double() + 0.004 * student[name].detach().double()
        assert torch.allclose(after[name].double(), expected, atol=1e-6), name
        assert not torch.equal(after[name], before[name]), name


def test_no_momentum_model_without_a_loss_that_reads_it():
    m = _model("itc.momentum_keys=false", "losses.mim=false", "losses.global_codes=false")
    assert m.teacher is None
    m.after_optimizer_step(0)
    assert torch.isfinite(m.compute(*pair_batch(), generator=gen()).loss)


def test_centres_update_in_training_mode_only():
    m = _model()
    batch = pair_batch()
    c0 = m.patch_targets.center.clone(), m.global_targets.center.clone()
    m.eval()
    m.compute(*batch, generator=gen())
    assert torch.equal(m.patch_targets.center, c0[0]) and torch.equal(m.global_targets.center, c0[1])
    m.train()
    m.compute(*batch, generator=gen())
    assert not torch.equal(m.patch_targets.center, c0[0]) and not torch.equal(m.global_targets.center, c0[1])


# --------------------------------------------------------------------------- schedule (recipe protocol)


def test_forward_follows_the_step_schedule():
    m = _model(
        "losses.mlm=true",
        "itc.queue_size=0",  # a filling queue would change the ITC task between the calls
        "itc.alpha_warmup_steps=4",
        "itm.easy_steps=1",
        "itm.ramp_steps=2",
        "losses.itm_start_step=1",
        "losses.masked_start_step=2",
    )
    images, ids, valid = pair_batch()
    batch = {"images": images, "input_ids": ids, "text_valid": valid, "image_ids": torch.arange(5)}
    seen = {s: m(batch, step=s, generator=gen()) for s in (0, 1, 2, 3)}
    assert {s: tuple(o.losses) for s, o in seen.items()} == {
        0: ("itc",),
        1: ("itc", "itm"),
        2: ("itc", "itm", "mlm", "mim", "global_codes"),
        3: ("itc", "itm", "mlm", "mim", "global_codes"),
    }
    assert [seen[s].stats["itm/hardness"].item() for s in (1, 2, 3)] == [0.0, 0.0, 0.5]
    assert m.find_unused_parameters and m.has_itc and m.has_itm
    # the distillation weight ramps over itc.alpha_warmup_steps: step 2's ITC is compute()'s with alpha 0.2
    ref = m.compute(images, ids, valid, torch.arange(5), alpha=0.2, generator=gen(), active_losses=("itc",))
    assert torch.allclose(seen[2].losses["itc"], ref.losses["itc"], rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- training


def test_a_few_steps_decrease_the_total_loss():
    m = _model("itc.queue_size=0")  # a filling queue would change the ITC task between steps
    images, ids, valid = pair_batch(b=6)
    image_ids = torch.arange(6)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    totals = []
    for step in range(8):
        out = m.compute(images, ids, valid, image_ids, generator=gen())
        assert all(torch.isfinite(v) for v in out.losses.values())
        totals.append(out.loss.item())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        m.after_optimizer_step(step)
    assert min(totals[-2:]) < 0.9 * totals[0], totals


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["losses.itm=false", "losses.mim=false", "losses.global_codes=false"], ("itc",)),
        (["losses.itc=false", "losses.itm=false"], ("mim", "global_codes")),
        (
            ["losses.mlm=true", "losses.global_codes=false", "image_masking.mode=drop"],
            ("itc", "itm", "mlm", "mim"),
        ),
    ],
)
def test_switching_losses_off_is_a_config_change(overrides, expected):
    m = _model(*overrides)
    images, ids, valid = pair_batch()
    out = m.compute(images, ids, valid, generator=gen())
    assert tuple(out.losses) == expected
    assert (out.text_mask is not None) == ("mlm" in expected)
    assert (out.image_mask is not None) == ("mim" in expected or "global_codes" in expected)
    out.loss.backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing  # every trainable parameter is used


def test_same_seed_same_result():
    m = _model("losses.mlm=true").eval()
    batch = pair_batch()
    a = m.compute(*batch, generator=gen(3))
    b = m.compute(*batch, generator=gen(3))
    assert torch.equal(a.loss, b.loss)
    assert torch.equal(a.image_mask, b.image_mask) and torch.equal(a.text_mask, b.text_mask)


def test_bad_inputs_raise_naming_the_argument():
    m = _model()
    images, ids, valid = pair_batch()
    with pytest.raises(TypeError, match="text_valid"):
        m.compute(images, ids, valid.long())
    with pytest.raises(ValueError, match="alpha"):
        m.compute(images, ids, valid, alpha=1.5)
    with pytest.raises(ValueError, match="hardness"):
        m.compute(images, ids, valid, itm_hardness=-0.5)
    with pytest.raises(ValueError, match="text_feat"):
        text_patch_similarity(torch.randn(2, 4, 8), torch.randn(2, 7))


def test_tiny_preset_builds_and_runs():
    torch.manual_seed(0)
    m = build_model(load_config("tiny"), vocab_size=VOCAB)
    assert m.student.vision.config.num_patches == 16
    out = m.compute(*pair_batch(b=2, size=64), generator=gen())
    assert out.image_mask.sum(1).tolist() == [8, 8]
    assert torch.isfinite(out.loss)


def test_bf16_autocast_keeps_fp32_losses():
    m = _model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m.compute(*pair_batch(), generator=gen())
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.losses.values())
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


# --------------------------------------------------------------------------- the trainer, CLI and evaluation


def test_cli_train_resume_exactly_and_eval(tmp_path):
    # momentum keys with a queue: the teacher, queue and target centres all carry over the resume
    sets = [*RUN, "codes.num_codes=16", "codes.dim=16", "codes.hidden_dim=32", "itc.momentum_keys=true"]
    res = check_cli_train_resume_eval("semmim", tmp_path, [*sets, "itc.queue_size=8"])["heldout"]
    r = res["retrieval"]
    assert all(0.0 <= r[k] <= 100.0 for k in ("itc_tr_r1", "itc_ir_r1", "itm_tr_r1", "itm_ir_r10"))
    assert set(res["finegrained"]) >= {"colour", "shape", "mean"}
    assert set(res["finegrained_itc"]) == set(res["finegrained"])
    assert {"pointing", "energy", "box_fraction"} <= set(res["grounding"])
