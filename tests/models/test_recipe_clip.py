from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from mamo_helpers import SMALL_MODEL
from recipe_helpers import single_thread

from maskmm.training import read_metrics
from maskmm.training.cli import eval_main, train_main
from maskmm.training.recipe import TokenizerIds, get_recipe

RECIPE = get_recipe("clip")
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
    lengths = torch.randint(4, length + 1, (b,), generator=g)
    lengths[0] = length
    valid = torch.arange(length)[None] < lengths[:, None]
    ids[~valid] = 0
    return {
        "images": torch.randn(b, 3, 32, 32, generator=g),
        "input_ids": ids,
        "text_valid": valid,
        "image_ids": torch.tensor(image_ids if image_ids is not None else list(range(b))),
    }


# --------------------------------------------------------------------------- config and parts


def test_presets_load_and_base_follows_the_paper():
    base = RECIPE.load_config("base")
    c = base.itc
    assert (c.temperature, c.learnable_temperature, c.min_temperature) == (0.07, True, 0.01)
    assert (base.model.image_size, base.model.patch_size, base.model.vision_dim) == (224, 16, 768)
    assert (base.model.text_dim, base.model.text_depth, base.model.embed_dim) == (512, 12, 512)
    assert base.train.batch_size == 32768 and base.itc.pool == "cls"
    assert set(RECIPE.presets()) >= {"tiny", "base"}


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("itc.temperature=0.005", "itc.temperature"),
        ("itc.min_temperature=0", "itc.min_temperature"),
        ("itc.queue_size=8", "itc.queue_size"),  # CLIP has no queue (not a field)
        ("data.image_size=48", "data.image_size"),
    ],
)
def test_config_rejects_bad_values(override, field):
    with pytest.raises(ValueError, match=field):
        RECIPE.load_config("tiny", [override])


def test_builds_the_two_encoders_only():
    m = _model()
    assert {n for n, _ in m.student.named_children()} == {"vision", "text", "vision_proj", "text_proj"}
    assert m.has_itc and not m.has_itm and not m.find_unused_parameters
    assert getattr(m.student.vision, "mask_token", None) is None
    with pytest.raises(ValueError, match="no image-text matching"):
        m.itm_logits(torch.zeros(1, 17, 32), torch.zeros(1, 4, 32), torch.ones(1, 4, dtype=torch.bool))


# --------------------------------------------------------------------------- the loss


def test_forward_backward_finite_and_every_parameter_gets_a_gradient():
    m = _model()
    out = m(_batch(), step=0, generator=torch.Generator())
    assert torch.isfinite(out.loss) and out.loss.dtype == torch.float32
    assert all(not v.requires_grad for v in out.stats.values())
    out.loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert m.logit_scale.grad is not None


@pytest.mark.parametrize("image_ids", [None, [0, 1, 1, 2, 3, 3]])
def test_loss_is_symmetric_infonce_with_the_logit_scale(image_ids):
    """Plain-torch CLIP loss: ``(CE(s) + CE(s.T)) / 2`` with ``s = exp(logit_scale) * f_i f_t^T``;
    pairs of one image are all positives (targets normalised per row)."""
    m = _model()
    with torch.no_grad():
        m.logit_scale.fill_(math.log(1 / 0.05))  # not the initial value
    batch = _batch(image_ids=image_ids)
    out = m(batch, step=0, generator=None)
    fi = F.normalize(m.encode_image(batch["images"])[1].double(), dim=-1)
    ft = F.normalize(m.encode_text(batch["input_ids"], batch["text_valid"])[1].double(), dim=-1)
    s = (fi @ ft.t()) / 0.05
    ids = batch["image_ids"]
    pos = (ids[:, None] == ids[None, :]).double()
    targets = pos / pos.sum(1, keepdim=True)
    ref = 0.5 * (-(targets * s.log_softmax(1)).sum(1).mean() - (targets * s.t().log_softmax(1)).sum(1).mean())
    assert torch.allclose(out.loss.double(), ref, rtol=1e-5, atol=1e-6)
    assert torch.allclose(out.stats["itc/temperature"].double(), torch.tensor(0.05).double(), rtol=1e-5)


def test_logit_scale_is_clamped_after_each_step_and_can_be_fixed():
    m = _model()
    with torch.no_grad():
        m.logit_scale.fill_(7.0)
    m.after_optimizer_step(0)
    assert m.logit_scale.item() == pytest.approx(math.log(100.0))
    fixed = _model("itc.learnable_temperature=false", "itc.temperature=0.1")
    assert "logit_scale" not in dict(fixed.named_parameters())
    assert "logit_scale" in fixed.state_dict()
    assert fixed.temperature.item() == pytest.approx(0.1)


# --------------------------------------------------------------------------- the trainer and the CLI


def _losses(rows):
    return [(r["step"], r["loss"], r["itc/temperature"]) for r in rows if "loss" in r]


def test_cli_train_resume_exactly_then_eval(tmp_path, capsys):
    sets = [x for o in TINY for x in ("--set", o)]
    full, part = tmp_path / "full", tmp_path / "part"
    assert train_main(["--recipe", "clip", *sets, "--out-dir", str(full), "--quiet"]) == 0
    # stopped by the time budget after its first step, then resumed to the end
    budget = ["--set", "train.max_seconds=1e-9"]
    assert train_main(["--recipe", "clip", *sets, *budget, "--out-dir", str(part), "--quiet"]) == 0
    assert [r["step"] for r in read_metrics(part / "metrics.jsonl")] == [1]
    resume = ["--resume", str(part), "--set", "train.max_seconds=0"]
    assert train_main(["--recipe", "clip", *sets, *resume, "--quiet"]) == 0
    ref, got = read_metrics(full / "metrics.jsonl"), read_metrics(part / "metrics.jsonl")
    assert len(_losses(ref)) == 4
    assert _losses(got) == _losses(ref)
    a = torch.load(full / "model.pt", weights_only=False)["model"]
    b = torch.load(part / "model.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert eval_main(["--checkpoint", str(part), "--json", str(tmp_path / "e.json")]) == 0
    table = capsys.readouterr().out
    assert "heldout (6 candidates)" in table and "ITM re-rank" not in table
    res = json.loads((tmp_path / "e.json").read_text())["heldout"]
    assert all(0.0 <= res["retrieval"][k] <= 100.0 for k in ("itc_tr_r1", "itc_ir_r1", "itc_tr_r10"))
    assert not any(k.startswith("itm_") for k in res["retrieval"])
    assert res["finegrained"] == {} and res["grounding"] == {}
    assert {"colour", "shape", "mean"} <= set(res["finegrained_itc"])
