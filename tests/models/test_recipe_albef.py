from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from mamo_helpers import SMALL_MODEL
from recipe_helpers import single_thread

from maskmm.training import read_metrics
from maskmm.training.cli import eval_main, train_main
from maskmm.training.recipe import TokenizerIds, get_recipe

RECIPE = get_recipe("albef")
IDS = TokenizerIds(vocab_size=64, pad_id=0, mask_id=3, special_ids=(0, 1, 2, 3, 4))

TINY = [
    *SMALL_MODEL,
    "train.batch_size=4",
    "train.steps=4",
    "train.log_every=1",
    "train.save_every=0",
    "train.eval_every=0",
    "data.train_size=64",
    "optim.warmup_steps=1",
    "log.progress=false",
    "log.plot=false",
    "eval.num_candidates=6",
    "eval.rerank_k=2",
    "eval.finegrained_samples=3",
    "eval.grounding_samples=2",
    "eval.splits=[heldout]",
]
#: the paper's ITC (momentum keys, a queue, learnable temperature, distillation from step 0) and
#: MLM distillation, hard ITM negatives from step 0
PAPER = [
    "itc.momentum_keys=true",
    "itc.queue_size=16",
    "itc.learnable_temperature=true",
    "itc.pool=cls",
    "itc.alpha_warmup_steps=0",
    "itc.distill=true",
    "losses.mlm_distill=true",
    "itm.easy_steps=0",
    "itm.ramp_steps=0",
]


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def _model(*overrides: str):
    torch.manual_seed(0)
    return RECIPE.build(RECIPE.load_config("tiny", [*TINY, *overrides]), IDS)


def _batch(b: int = 6, length: int = 9, seed: int = 1, image_ids: list[int] | None = None) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, IDS.vocab_size, (b, length), generator=g)
    ids[:, 0] = 1
    lengths = torch.randint(5, length + 1, (b,), generator=g)
    lengths[0] = length
    valid = torch.arange(length)[None] < lengths[:, None]
    ids[torch.arange(b), lengths - 1] = 2
    ids[~valid] = 0
    return {
        "images": torch.randn(b, 3, 32, 32, generator=g),
        "input_ids": ids,
        "text_valid": valid,
        "image_ids": torch.tensor(image_ids if image_ids is not None else list(range(b))),
    }


def _scramble_teacher(m) -> None:
    """Move the momentum model away from the student (as after some training)."""
    g = torch.Generator().manual_seed(5)
    for name, buf in m.teacher.module.named_buffers():
        if buf.is_floating_point() and "norm" not in name:
            buf.add_(0.05 * torch.randn(buf.shape, generator=g))


# --------------------------------------------------------------------------- config and parts


def test_base_preset_follows_the_paper():
    c = RECIPE.load_config("base")
    m = c.model
    assert (m.image_size, m.patch_size, m.vision_dim, m.vision_depth) == (224, 16, 768, 12)
    assert (m.text_dim, m.text_depth, m.fusion, m.fusion_depth) == (768, 6, "cross", 6)
    assert (c.itc.momentum_keys, c.itc.queue_size, c.itc.temperature) == (True, 65536, 0.07)
    assert c.itc.learnable_temperature and c.itc.distill and c.itc.alpha == 0.4 and c.itc.pool == "cls"
    assert (c.itm.hardness, c.itm.easy_steps, c.itm.ramp_steps) == (1.0, 0, 0)
    assert c.ema.decay == 0.995 and c.text_masking.ratio == 0.15 and c.losses.mlm_distill
    assert (c.optim.lr, c.optim.weight_decay, c.train.batch_size) == (1e-4, 0.02, 512)
    assert set(RECIPE.presets()) >= {"tiny", "base"}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["itc.momentum_keys=false", "itc.queue_size=8"], "itc.queue_size"),
        (["losses.itc=false", "losses.itm=false", "losses.mlm=false"], "losses"),
        (["text_masking.ratio=1.0"], "text_masking.ratio"),
        (["losses.mlm_weight=-1"], "losses.mlm_weight"),
        (["train.batch_size=1"], "train.batch_size"),
    ],
)
def test_config_rejects_bad_values(overrides, field):
    with pytest.raises(ValueError, match=field):
        RECIPE.load_config("tiny", [*TINY, *overrides])


def test_parts_follow_the_enabled_losses():
    m = _model(*PAPER)
    assert type(m.student.fusion).__name__ == "CrossAttentionFusion"
    assert m.has_itc and m.has_itm and not m.find_unused_parameters
    assert getattr(m.student.vision, "mask_token", None) is None
    names = {n.split(".")[0] for n, _ in m.teacher.module.named_children()}
    assert names == {"vision", "text", "fusion", "vision_proj", "text_proj", "mlm_head"}
    assert not any(n.startswith("teacher.") for n, _ in m.named_parameters())
    # online ITC keys without MLM distillation: no momentum model at all
    bare = _model("itc.momentum_keys=false", "itc.queue_size=0", "losses.mlm_distill=false")
    assert bare.teacher is None
    only_itc = _model("losses.itm=false", "losses.mlm=false")
    assert only_itc.student.fusion is None and not only_itc.has_itm


# --------------------------------------------------------------------------- the step


def test_forward_backward_finite_and_every_parameter_gets_a_gradient():
    m = _model(*PAPER)
    _scramble_teacher(m)
    out = m(_batch(), step=3, generator=torch.Generator().manual_seed(0))
    assert tuple(out.losses) == ("itc", "itm", "mlm")
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in out.losses.values())
    assert torch.allclose(out.loss, sum(out.losses.values()))
    assert all(not v.requires_grad for v in out.stats.values())
    out.loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert m.itc.temp.grad is not None
    assert out.stats["itm/hardness"].item() == 1.0 and out.stats["alpha"].item() == pytest.approx(0.4)


def test_itc_is_albef_momentum_distillation_against_batch_and_queue():
    """Plain-torch ALBEF ITC: keys = momentum features of the batch then the queue; targets
    ``alpha * softmax(momentum sims) + (1 - alpha) * one-hot``; loss ``(CE_i2t + CE_t2i) / 2``."""
    m = _model(*PAPER, "losses.itm=false", "losses.mlm=false")
    _scramble_teacher(m)
    m(_batch(seed=2), step=0)  # fills 6 of the 16 queue slots
    batch = _batch(seed=3, image_ids=list(range(10, 16)))  # no positive in the queue
    q = m.itc.queue
    qi, qt, qvalid = q.image.clone(), q.text.clone(), q.valid.clone()
    with torch.no_grad():
        m.itc.temp.fill_(0.05)
    out = m(batch, step=0)
    images, ids, valid = batch["images"], batch["input_ids"], batch["text_valid"]
    t = m.teacher.module
    with torch.no_grad():
        fi = F.normalize(m.encode_image(images)[1].double(), dim=-1)
        ft = F.normalize(m.encode_text(ids, valid)[1].double(), dim=-1)
        fi_m = F.normalize(t.vision_proj(t.vision(images).last_hidden[:, 0]).double(), dim=-1)
        ft_m = F.normalize(t.text_proj(t.text(ids, valid).last_hidden[:, 0]).double(), dim=-1)
    txt_keys = torch.cat([ft_m, qt.double()[qvalid]])
    img_keys = torch.cat([fi_m, qi.double()[qvalid]])
    assert qvalid.sum() == 6
    b = ids.shape[0]
    onehot = torch.eye(b, txt_keys.shape[0], dtype=torch.float64)
    alpha, temp = 0.4, 0.05

    def ce(q, keys, q_m):
        target = alpha * (q_m @ keys.t() / temp).softmax(1) + (1 - alpha) * onehot
        return -(target * (q @ keys.t() / temp).log_softmax(1)).sum(1).mean()

    ref = 0.5 * (ce(fi, txt_keys, fi_m) + ce(ft, img_keys, ft_m))
    assert torch.allclose(out.losses["itc"].double(), ref, rtol=1e-5, atol=1e-6)
    # the batch's momentum features were queued after the loss
    assert q.valid.sum() == 12
    assert torch.allclose(q.image[6:12].double(), fi_m, atol=1e-6)


def test_mlm_predicts_masked_tokens_from_the_clean_image_with_distillation():
    """MLM = ``(1 - alpha) CE(label) + alpha CE(momentum prediction)`` over the masked tokens, with
    the masked caption fused with the student's clean image states (momentum: its own)."""
    m = _model(*PAPER, "losses.itc=false", "losses.itm=false")
    _scramble_teacher(m)
    batch = _batch()
    g = torch.Generator().manual_seed(7)
    out = m(batch, step=0, generator=torch.Generator().manual_seed(7))
    images, ids, valid = batch["images"], batch["input_ids"], batch["text_valid"]
    tm = m.text_masker(ids, valid, generator=g)  # the same draw
    st, t = m.student, m.teacher.module
    with torch.no_grad():
        txt, t_txt = st.text(tm.input_ids, valid).last_hidden, t.text(tm.input_ids, valid).last_hidden
        fused = st.fusion(st.vision(images).last_hidden, None, txt, valid)
        t_fused = t.fusion(t.vision(images).last_hidden, None, t_txt, valid)
    sel = tm.labels != -100
    logp = st.mlm_head(fused.text[sel]).double().log_softmax(-1)
    soft = t.mlm_head(t_fused.text[sel]).double().softmax(-1)
    hard = F.nll_loss(logp, tm.labels[sel])
    ref = 0.6 * hard + 0.4 * -(soft * logp).sum(-1).mean()
    assert torch.allclose(out.losses["mlm"].double(), ref, rtol=1e-5, atol=1e-6)
    assert sel.sum() == out.stats["mlm/num_masked"]
    # masks 15 % of the non-special tokens (at least one), never specials or padding
    assert not (tm.mask & ~(valid & (ids >= 5))).any() and (tm.mask.sum(1) >= 1).all()


def test_momentum_model_follows_the_student_after_each_optimizer_step():
    m = _model(*PAPER)
    _scramble_teacher(m)
    name = "vision.blocks.0.attn.qkv.weight"
    before = dict(m.teacher.module.named_buffers())[name].clone()
    student = dict(m.student.named_parameters())[name].detach()
    m.after_optimizer_step(0)
    after = dict(m.teacher.module.named_buffers())[name]
    assert torch.allclose(after, 0.995 * before + 0.005 * student, atol=1e-6)


# --------------------------------------------------------------------------- the trainer and the CLI


def _losses(rows):
    keys = ("loss", "loss_itc", "loss_itm", "loss_mlm", "itc/temperature")
    return [(r["step"], *(r[k] for k in keys)) for r in rows if "loss" in r]


def test_cli_train_resume_exactly_then_eval(tmp_path, capsys):
    sets = [x for o in [*TINY, *PAPER] for x in ("--set", o)]
    full, part = tmp_path / "full", tmp_path / "part"
    assert train_main(["--recipe", "albef", *sets, "--out-dir", str(full), "--quiet"]) == 0
    # stopped by the time budget after its first step, then resumed to the end
    budget = ["--set", "train.max_seconds=1e-9"]
    assert train_main(["--recipe", "albef", *sets, *budget, "--out-dir", str(part), "--quiet"]) == 0
    assert [r["step"] for r in read_metrics(part / "metrics.jsonl")] == [1]
    resume = ["--resume", str(part), "--set", "train.max_seconds=0"]
    assert train_main(["--recipe", "albef", *sets, *resume, "--quiet"]) == 0
    ref, got = read_metrics(full / "metrics.jsonl"), read_metrics(part / "metrics.jsonl")
    assert len(_losses(ref)) == 4
    assert _losses(got) == _losses(ref)
    # student, momentum model, temperature and queue too
    a = torch.load(full / "model.pt", weights_only=False)["model"]
    b = torch.load(part / "model.pt", weights_only=False)["model"]
    assert any(k.startswith("teacher.") for k in a) and "itc.queue.image" in a
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))

    assert eval_main(["--checkpoint", str(part), "--json", str(tmp_path / "e.json")]) == 0
    table = capsys.readouterr().out
    assert "heldout (6 candidates)" in table and "ITM re-rank" in table
    res = json.loads((tmp_path / "e.json").read_text())["heldout"]
    r = res["retrieval"]
    assert all(0.0 <= r[k] <= 100.0 for k in ("itc_tr_r1", "itc_ir_r1", "itm_tr_r1", "itm_ir_r10"))
    assert {"colour", "shape", "mean"} <= set(res["finegrained"])
    assert set(res["finegrained_itc"]) == set(res["finegrained"])
    assert {"pointing", "energy", "box_fraction"} <= set(res["grounding"])
