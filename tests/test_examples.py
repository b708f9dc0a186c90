"""The user recipe of docs/new-method.md (``examples/flip_recipe.py``) trains with maskmm's trainer and
evaluates with maskmm's evaluator, through the same entry points as ``maskmm-train`` / ``maskmm-eval``
(``examples/`` is not installed: the repository root goes on ``sys.path``, as ``PYTHONPATH=.`` does)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
RECIPE = "examples.flip_recipe:RECIPE"
CONFIG = REPO / "examples" / "flip_tiny.yaml"
STEPS = 30
# a small model on 32 px images (16 patches of 8 px, 8 kept): about 0.1 s a step on one CPU thread
SMALL = [
    "model.image_size=32",
    "data.image_size=32",
    "model.vision_dim=64",
    "model.vision_depth=2",
    "model.text_dim=64",
    "model.text_depth=1",
    "model.embed_dim=32",
    "train.batch_size=32",
    f"train.steps={STEPS}",
    "train.log_every=1",
    "train.save_every=0",
    "train.threads=1",
    "optim.lr=1e-3",
    "optim.warmup_steps=5",
    "log.plot=false",
]


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(REPO))
    threads = torch.get_num_threads()  # train.threads sets the process-wide value
    yield
    torch.set_num_threads(threads)


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def test_example_is_short_and_follows_the_protocol(on_path: None) -> None:
    from maskmm.training import Objective, TokenizerIds, get_recipe

    assert len((REPO / "examples" / "flip_recipe.py").read_text().splitlines()) < 100
    recipe = get_recipe(RECIPE)
    cfg = recipe.load_config(CONFIG, [o for o in SMALL if not o.startswith("train.threads")])
    assert cfg.flip.mask_ratio == 0.5 and cfg.model.patch_size == 8
    model = recipe.build(cfg, TokenizerIds(vocab_size=50, pad_id=0, mask_id=3, special_ids=(0, 1, 2, 3)))
    assert isinstance(model, Objective) and model.has_itc and not model.has_itm


def test_example_trains_and_evaluates(on_path: None, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from maskmm.training.cli import eval_main, train_main

    run = tmp_path / "flip"
    argv = ["--recipe", RECIPE, "--config", str(CONFIG), "--out-dir", str(run), "--quiet", *_sets(SMALL)]
    assert train_main(argv) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    assert len(rows) == STEPS
    for name in ("loss", "loss_itc", "loss_pixel"):
        values = [r[name] for r in rows]
        assert all(math.isfinite(v) for v in values), (name, values)
        first, last = sum(values[:5]) / 5, sum(values[-5:]) / 5
        assert last < first, (name, values)  # both objectives learn, not only their sum
    assert rows[-1]["nonfinite_steps"] == 0

    out = tmp_path / "eval.json"
    evals = ["eval.num_candidates=100", "eval.finegrained_samples=50"]
    argv = ["--checkpoint", str(run), "--splits", "val", "--json", str(out), *_sets(evals)]
    assert eval_main(argv) == 0  # the recipe is found again by the import path stored in the checkpoint
    assert "ITC" in capsys.readouterr().out
    res = json.loads(out.read_text())["val"]
    assert res["retrieval"]["candidates"] == 100
    assert 0.0 <= res["retrieval"]["itc_tr_r1"] <= 100.0
    assert res["finegrained_itc"] and res["finegrained"] == {} and res["grounding"] == {}  # ITC only
