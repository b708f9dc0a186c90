"""The recipes benchmark script (``benchmarks/recipes_compare.py``) in its ``--quick`` mode: every arm
on MAMO (and CLIP where that recipe is there) for two steps, small evaluation sizes."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from mamo_helpers import benchmark_script

from maskmm.training import get_recipe

SECONDS = 0.4
STEPS = 2
SPLITS = ("heldout", "val")
ATTRIBUTES = {"colour", "shape", "size", "position", "relation"}


def _available(name: str) -> bool:
    try:
        get_recipe(name)
    except (ValueError, TypeError):
        return False
    return True


RECIPES = ["mamo", *(["clip"] if _available("clip") else [])]
slow = pytest.mark.slow  # the fixture trains and evaluates 9 tiny runs (~15 s)


@pytest.fixture(scope="module")
def bench():
    with benchmark_script("recipes_compare") as module:
        yield module


@pytest.fixture(scope="module")
def quick_run(bench, tmp_path_factory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("recipes")
    threads = torch.get_num_threads()
    argv = ["--quick", "--recipes", ",".join(RECIPES), "--steps", str(STEPS), "--seconds", str(SECONDS)]
    argv += ["--splits", *SPLITS, "--threads", "1", "--out", str(out)]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = bench.main(argv)
    (json_file,) = out.glob("recipes-*.json")
    (md_file,) = out.glob("recipes-*.md")
    return {
        "rc": rc,
        "threads_before": threads,
        "threads_after": torch.get_num_threads(),
        "files": sorted(p.name for p in out.iterdir()),
        "json_file": json_file,
        "md_file": md_file,
        "report": json.loads(json_file.read_text()),
        "md": md_file.read_text(),
        "stdout": stdout.getvalue(),
    }


def _pct(value: Any) -> bool:
    return value is None or (isinstance(value, float) and 0.0 <= value <= 100.0)


def _check_run(run: dict[str, Any], *, itm: bool) -> None:
    assert "error" not in run
    assert run["steps"] >= 1 and run["train_seconds"] > 0
    assert run["seconds_per_step"] == pytest.approx(run["train_seconds"] / run["steps"])
    assert run["has_itm"] is itm and run["has_itc"] is True
    assert run["config"]["train"]["out_dir"] == "<temporary folder>"
    assert run["config"]["train"]["save_every"] == 0 and run["config"]["train"]["eval_every"] == 0
    assert list(run["metrics"]) == list(SPLITS)
    for split in SPLITS:
        m = run["metrics"][split]
        r = m["retrieval"]
        for key in ("itc_tr_r1", "itc_ir_r1"):
            assert 0.0 <= r[key] <= 100.0
        if itm:
            assert 0.0 <= r["itm_tr_r1"] <= 100.0 and 0.0 <= r["itm_ir_r1"] <= 100.0
            assert set(m["finegrained"]) == ATTRIBUTES | {"mean"}
            assert all(_pct(v) for v in m["finegrained"].values())
            assert 0.0 <= m["grounding"]["pointing"] <= 100.0
        else:
            assert "itm_tr_r1" not in r and m["finegrained"] == {} and m["grounding"] == {}
        assert set(m["finegrained_itc"]) == ATTRIBUTES | {"mean"}
        assert all(_pct(v) for v in m["finegrained_itc"].values())
        assert m["finegrained_itc"]["mean"] is not None


@slow
def test_quick_run_writes_both_files_and_restores_threads(quick_run):
    assert quick_run["rc"] == 0
    assert quick_run["json_file"].stem == quick_run["md_file"].stem
    assert quick_run["json_file"].stem.startswith("recipes-cpu-")
    assert quick_run["files"] == sorted([quick_run["json_file"].name, quick_run["md_file"].name])
    assert quick_run["threads_after"] == quick_run["threads_before"]
    env = quick_run["report"]["environment"]
    assert env["device"].startswith("cpu: ") and env["device"].endswith("1 thread")
    assert env["torch"] == torch.__version__ and env["maskmm"] and env["date"]
    assert env["command"].startswith("python benchmarks/recipes_compare.py --quick")
    s = quick_run["report"]["settings"]
    assert s["steps"] == STEPS and s["seconds"] == SECONDS and s["splits"] == list(SPLITS)
    assert s["recipes"] == RECIPES and s["arms"] == ["steps", "seconds", "ablation"] and s["seed"] == 0


@slow
def test_equal_steps_arm(quick_run):
    runs = quick_run["report"]["runs"]["steps"]
    assert list(runs) == RECIPES
    for name, run in runs.items():
        _check_run(run, itm=name != "clip")
        assert run["steps"] == STEPS and run["schedule_steps"] == STEPS and not run["stopped_early"]
        assert run["config"]["train"]["max_seconds"] == 0.0


@slow
def test_equal_seconds_arm_horizon_from_measured_step_time(quick_run):
    runs = quick_run["report"]["runs"]
    for name, run in runs["seconds"].items():
        _check_run(run, itm=name != "clip")
        assert run["train_seconds"] > SECONDS and run["config"]["train"]["max_seconds"] == SECONDS
        expected = max(1, math.ceil(SECONDS / runs["steps"][name]["seconds_per_step"]))
        assert run["schedule_steps"] == expected == run["config"]["train"]["steps"]
        assert "equal-steps run" in run["horizon_from"]
        assert run["past_schedule"] == (run["steps"] > expected)
    assert list(runs["seconds"]) == RECIPES


@slow
def test_ablation_in_paper_order(bench, quick_run):
    runs = quick_run["report"]["runs"]["ablation"]
    assert list(runs) == ["itc+itm", "+mlm", "+mlm+mim", "+mrm", "+mrm+mlm", "all"]
    switched_on = {
        "itc+itm": {"itc", "itm"},
        "+mlm": {"itc", "itm", "mlm"},
        "+mlm+mim": {"itc", "itm", "mlm", "mim"},
        "+mrm": {"itc", "itm", "mrm"},
        "+mrm+mlm": {"itc", "itm", "mrm", "mlm"},
        "all": {"itc", "itm", "mlm", "mrm", "mim"},
    }
    for key, run in runs.items():
        _check_run(run, itm=True)
        losses = run["config"]["losses"]
        assert {x for x in ("itc", "itm", "mlm", "mrm", "mim") if losses[x]} == switched_on[key]
        assert run["steps"] == STEPS
    # "all" is the MAMO preset itself: the equal-steps run, not trained twice
    assert "equal-steps" in runs["all"]["reused_from"]
    assert runs["all"]["metrics"] == quick_run["report"]["runs"]["steps"]["mamo"]["metrics"]
    assert "reused_from" not in runs["+mrm+mlm"]


@slow
def test_markdown_tables(quick_run):
    md = quick_run["md"]
    assert md.startswith("# Recipes compared on the built-in data")
    out = quick_run["stdout"]
    assert "| metric | ITC+ITM |" in out and "[steps/mamo] training for 2 steps" in out
    assert f"wrote {quick_run['json_file']}" in out
    assert "Device: cpu: " in md and "Command: `python benchmarks/recipes_compare.py" in md
    heads = [line for line in md.splitlines() if line.startswith("## ")]
    assert [h.split(" (")[0] for h in heads] == [
        "## Equal steps",
        "## Equal training wall-clock",
        "## MAMO objective ablation, paper order",
    ]
    assert md.count("| metric |") == 3 and md.count("| steps |") == 3
    titles = {"mamo": "MAMO", "clip": "CLIP"}
    assert f"| metric | {' | '.join(titles[r] for r in RECIPES)} |" in md
    assert "| metric | ITC+ITM | +MLM | +MLM+MIM | +MRM | +MRM+MLM | all (MAMO) |" in md
    for split in SPLITS:
        for row in (
            "R@1 TR (ITC)",
            "R@1 IR (ITC)",
            "R@1 TR (ITM re-rank)",
            "R@1 IR (ITM re-rank)",
            "fine-grained ITM colour",
            "fine-grained ITC relation",
            "fine-grained ITC mean",
            "grounding pointing",
        ):
            assert md.count(f"| {split}: {row} |") == 3
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| metric"):
            cells = [c.strip() for c in line.strip("|").split("|")][1:]
            assert len(cells) in (len(RECIPES), 6)
            assert all(c == "–" or float(c) >= 0.0 for c in cells)
    if "clip" in RECIPES:  # CLIP has no ITM head
        row = next(line for line in md.splitlines() if line.startswith("| heldout: R@1 TR (ITM re-rank) |"))
        assert row.rstrip(" |").endswith("–")


def test_bad_arguments(bench, capsys):
    for argv, message in (
        (["--recipes", "mamo,bogus"], "--recipes takes"),
        (["--arms", "steps,nope"], "--arms takes"),
        (["--horizon", "soon"], "--horizon must be"),
        (["--horizon", "0"], "--horizon must be >= 1"),
        (["--seconds", "0"], "--seconds must be a finite number > 0"),
        (["--steps", "0"], "--steps must be >= 1"),
    ):
        with pytest.raises(SystemExit) as exc:
            bench.parse_args(argv)
        assert exc.value.code == 2 and message in capsys.readouterr().err
    args = bench.parse_args(["--quick", "--horizon", "50"])
    assert (args.steps, args.seconds, args.horizon, args.recipes) == (3, 0.5, 50, list(bench.RECIPES))
    args = bench.parse_args([])
    assert (args.steps, args.seconds, args.horizon, args.splits) == (
        800,
        300.0,
        "measured",
        ["heldout", "val"],
    )


def test_bad_override_stops_before_training(bench, tmp_path: Path, capsys):
    rc = bench.main(["--quick", "--recipes", "mamo", "--set", "train.nope=1", "--out", str(tmp_path)])
    assert rc == 2 and "nope" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_signal_stops_the_benchmark_not_just_one_run(bench, tmp_path: Path, monkeypatch, capsys):
    """SIGTERM/SIGINT end a trainer with TrainingInterrupted: the benchmark exits 128 + signal at once
    instead of recording one failed run and starting the next."""
    from maskmm.training import TrainingInterrupted

    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args[0].name)
        raise TrainingInterrupted(15, 1, None)

    monkeypatch.setattr(bench, "train_and_evaluate", interrupted)
    rc = bench.main(["--quick", "--recipes", "mamo", "--arms", "steps,ablation", "--out", str(tmp_path)])
    assert rc == 128 + 15 and calls == ["mamo"]
    assert "interrupted by signal 15: no run finished" in capsys.readouterr().err
