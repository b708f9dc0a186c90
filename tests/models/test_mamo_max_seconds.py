"""Time-budgeted training (``train.max_seconds``), the ITC fine-grained scorer, and the
MAMO vs contrastive-only benchmark script on a very small model."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from mamo_helpers import SMALL_MODEL, benchmark_script
from maskmm.models.mamo.builder import build_model
from maskmm.models.mamo.config import load_config

from maskmm.data import build_fine_grained_set
from maskmm.evaluation.builtin import eval_dataset
from maskmm.evaluation.run import evaluate, evaluate_finegrained
from maskmm.training import Trainer
from maskmm.training.data import build_tokenizer

SMALL = [
    *SMALL_MODEL,
    "model.mlp_ratio=2.0",
    "losses.mim_decoder_depth=0",
    "train.batch_size=4",
    "data.train_size=64",
    "optim.warmup_steps=1",
    "itc.alpha_warmup_steps=0",
    "train.eval_every=0",
    "train.save_every=0",
    "log.progress=false",
    "log.plot=false",
    "eval.num_candidates=6",
    "eval.rerank_k=2",
    "eval.grounding_samples=2",
    "eval.splits=[heldout]",
]
CONTRASTIVE = ["losses.itm=false", "losses.mlm=false", "losses.mrm=false", "losses.mim=false"]


def _trainer(tmp_path: Path, *extra: str, log: bool = False) -> Trainer:
    cfg = load_config("tiny", [*SMALL, f"train.out_dir={tmp_path}", *extra])
    return Trainer("mamo", cfg, device="cpu", log=log)


def _built(*extra: str):
    cfg = load_config("tiny", [*SMALL, *extra])
    tok = build_tokenizer(cfg)
    return build_model(cfg, vocab_size=tok.vocab_size, pad_id=tok.pad_id), tok, cfg


# --------------------------------------------------------------------------- train.max_seconds


def test_max_seconds_stops_early_and_logs_the_last_step(tmp_path):
    tr = _trainer(tmp_path, "train.steps=50", "train.max_seconds=0.01", "train.log_every=100")
    res = tr.fit()
    tr.close()
    assert 1 <= res.step < 50 and res.stopped_early
    assert res.train_seconds > 0.01 and res.seconds >= res.train_seconds
    losses = [r for r in res.history if "loss" in r]
    assert losses and losses[-1]["step"] == res.step  # the stopping step is logged
    assert not (tmp_path / "metrics.jsonl").exists()  # log=False writes nothing


def test_no_budget_runs_every_step(tmp_path):
    tr = _trainer(tmp_path, "train.steps=2")
    res = tr.fit()
    tr.close()
    assert res.step == 2 and not res.stopped_early and res.train_seconds > 0


def test_training_clock_leaves_out_evaluation_and_checkpoints(tmp_path):
    tr = _trainer(tmp_path, "train.steps=2", "train.save_every=1", "train.eval_every=1", log=True)
    evaluate_now, calls = tr.evaluate_now, []

    def slow_evaluate_now():
        calls.append(tr.step)
        time.sleep(0.3)  # evaluation now costs a known time
        return evaluate_now()

    tr.evaluate_now = slow_evaluate_now
    res = tr.fit()
    tr.close()
    assert calls == [1]  # evaluated after step 1 (never after the last step)
    assert any("eval/itc_tr_r1" in r for r in res.history)
    assert res.seconds - res.train_seconds >= 0.3


@pytest.mark.parametrize("value", ["-1", ".nan", "nan", ".inf"])
def test_max_seconds_validation(value):
    with pytest.raises(ValueError, match=r"train\.max_seconds"):
        load_config("tiny", [f"train.max_seconds={value}"])


def test_max_seconds_parses():
    assert load_config("tiny", ["train.max_seconds=2.5"]).train.max_seconds == 2.5
    assert load_config("tiny").train.max_seconds == 0.0


# --------------------------------------------------------------------------- fine-grained scorers


@pytest.mark.parametrize("scorer", ["itc", "itm"])
def test_finegrained_scorers_give_percentages(scorer):
    model, tok, cfg = _built()
    model.train()
    res = evaluate_finegrained(model, tok, cfg, "heldout", 8, scorer=scorer)
    assert {"colour", "shape", "mean"} <= set(res)
    assert all(0.0 <= v <= 100.0 for v in res.values() if not math.isnan(v))
    assert not math.isnan(res["mean"])
    assert model.training  # the mode is restored
    assert evaluate_finegrained(model, tok, cfg, "heldout", 0, scorer=scorer) == {}


@torch.no_grad()
def _itc_finegrained_reference(model, tok, cfg, split: str, n: int) -> dict[str, float]:
    """Per-attribute % of images whose true caption has a strictly higher ITC cosine than its distractor."""
    model.eval()
    fg = build_fine_grained_set(eval_dataset(cfg, split, n), n, seed=cfg.data.seed)
    _, img_feat = model.encode_image(fg.images)
    img_feat = img_feat / img_feat.norm(dim=-1, keepdim=True)

    def cosine(rows: list[int], captions: list[str]) -> torch.Tensor:
        t = tok(captions, cfg.data.max_text_len, padding="max_length")
        _, feat = model.encode_text(t.input_ids, t.valid)
        return (img_feat[rows] * feat / feat.norm(dim=-1, keepdim=True)).sum(-1)

    true = cosine(list(range(n)), fg.captions)
    out = {}
    for attr, caps in fg.distractors.items():
        rows = [i for i, c in enumerate(caps) if c is not None]
        if not rows:
            out[attr] = math.nan
            continue
        wins = (true[rows] > cosine(rows, [caps[i] for i in rows])).double()
        out[attr] = 100.0 * wins.mean().item()
    present = [v for v in out.values() if not math.isnan(v)]
    out["mean"] = sum(present) / len(present)
    return out


def test_finegrained_itc_scorer_matches_cosine_reference():
    model, tok, cfg = _built()
    got = evaluate_finegrained(model, tok, cfg, "heldout", 8, scorer="itc")
    ref = _itc_finegrained_reference(model, tok, cfg, "heldout", 8)
    assert set(got) == set(ref) and sum(not math.isnan(v) for v in ref.values()) >= 3
    assert got == pytest.approx(ref, nan_ok=True)


def test_finegrained_rejects_unknown_or_unavailable_scorer():
    model, tok, cfg = _built()
    with pytest.raises(ValueError, match="scorer"):
        evaluate_finegrained(model, tok, cfg, "heldout", 4, scorer="bogus")
    itc_only, tok, cfg = _built(*CONTRASTIVE)
    with pytest.raises(ValueError, match=r"scorer=.itm.*ITM head"):
        evaluate_finegrained(itc_only, tok, cfg, "heldout", 4)
    res = evaluate_finegrained(itc_only, tok, cfg, "heldout", 4, scorer="itc")
    assert "mean" in res
    # evaluate() still skips the ITM fine-grained tests of a model without an ITM head
    assert evaluate(itc_only, tok, cfg)["heldout"]["finegrained"] == {}
    no_itc, tok, cfg = _built("losses.itc=false")
    with pytest.raises(ValueError, match=r"scorer=.itc.*ITC projections"):
        evaluate_finegrained(no_itc, tok, cfg, "heldout", 4, scorer="itc")


# --------------------------------------------------------------------------- benchmark script


@pytest.fixture(scope="module")
def bench():
    with benchmark_script("mamo_vs_contrastive") as module:
        yield module


def test_benchmark_script_smoke(bench, tmp_path, capsys):
    keep = [o for o in SMALL if not o.startswith(("train.", "log.", "eval.rerank", "eval.grounding"))]
    sets = [x for o in keep for x in ("--set", o)]
    argv = ["--seconds", "0.3", "--steps", "3", "--finegrained-samples", "8", "--out", str(tmp_path)]
    assert bench.main([*argv, *sets, "--set", "train.batch_size=4", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    (json_file,) = tmp_path.glob("mamo-vs-contrastive-*.json")
    (md_file,) = tmp_path.glob("mamo-vs-contrastive-*.md")
    assert json_file.stem == md_file.stem
    report = json.loads(json_file.read_text())
    assert report["environment"]["device"].startswith("cpu: ") and report["environment"]["maskmm"]
    mamo, itc = report["arms"]["mamo"], report["arms"]["contrastive"]
    assert mamo["config"]["losses"]["mlm"] and not itc["config"]["losses"]["itm"]
    for arm in (mamo, itc):
        assert arm["steps"] >= 1 and arm["train_seconds"] > 0.3
        assert arm["config"]["train"]["max_seconds"] == 0.3 and arm["config"]["train"]["steps"] == 3
        r = arm["metrics"]["heldout"]["retrieval"]
        assert {"itc_tr_r1", "itc_ir_r1", "itc_tr_r10"} <= set(r) and "itm_tr_r1" not in r
    assert "mean" in mamo["metrics"]["heldout"]["finegrained_itm"]
    assert "finegrained_itm" not in itc["metrics"]["heldout"]
    assert "| heldout: ITC R@1 TR |" in out and "| heldout: fine-grained ITM mean |" in out
    assert md_file.read_text().count("| steps reached |") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([json_file.name, md_file.name])


def test_benchmark_rejects_bad_arguments(bench, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(["--seconds", "0"])
    assert exc.value.code == 2 and "--seconds must be a finite number > 0" in capsys.readouterr().err
    args = bench.parse_args(["--seconds", "5", "--set", "train.nope=1"])
    with pytest.raises(ValueError, match="nope"):
        bench.arm_configs(args, "/tmp/unused")
