"""Every recipe trained on the built-in data from its ``tiny`` preset, at equal steps and at equal
training wall-clock, plus MAMO's objective ablation, evaluated on the built-in held-out and val splits.

Three arms (``--arms``, default all three), every run one after the other in one process:

- ``steps``: each recipe of ``--recipes`` (default ``mamo,maskvlm,semmim,albef,clip``) trains for
  ``--steps`` optimiser steps (default 800), which is also its learning-rate schedule horizon;
- ``seconds``: each recipe trains for ``--seconds`` of training wall-clock (``train.max_seconds``,
  default 300 s; periodic evaluations and checkpoints are off, so the clock covers data, forward,
  backward and optimiser only). The learning-rate schedule horizon (``train.steps``) is chosen by
  ``--horizon``:

  - ``measured`` (default): the number of steps the budget allows, ``ceil(seconds / s_per_step)``,
    with ``s_per_step`` the recipe's own training seconds per step in this invocation's ``steps`` arm
    or, when that arm is not run, in a short calibration run (``--calibration-steps`` timed steps after
    two warm-up steps; not reported as a run). Each recipe's warm-up + cosine schedule so ends about
    where its budget does;
  - ``preset``: the preset's own ``train.steps`` (e.g. 800 for MAMO, 2400 for CLIP);
  - an integer: that horizon for every recipe.

  A run that reaches its horizon before its budget is spent trains on at the final learning rate
  (``past_schedule`` in the JSON); one that does not reach it stops above the final learning rate;
- ``ablation``: MAMO's objectives in the paper's order at equal steps (``--steps``): ITC+ITM; +MLM;
  +MLM+MIM; +MRM; +MRM+MLM; all (``losses.<x>=true/false`` over the MAMO ``tiny`` preset). The
  ``all`` row is the ``mamo`` run of the ``steps`` arm when that ran with the identical config (same
  seed and settings, so the same run: it is not trained twice; ``reused_from`` says so).

Every run starts from the same state: the trainer seeds Python, NumPy and torch with ``train.seed``
(the preset's, 0, unless ``--set`` changes it) before building the model, the data stream and the
masking generator derive from it, and the evaluation is seeded again; after each run the torch
thread count is restored, ``torch._dynamo`` is reset (``train.compile``) and the model is freed, so
that nothing of one run leaks into the next. Nothing is written but the results: each run uses a
temporary ``train.out_dir`` with logging, checkpoints and plots off.

Each run is evaluated by :func:`maskmm.evaluation.run.evaluate` on ``--splits`` (default
``heldout val``): retrieval R@1/5/10 both ways over ``eval.num_candidates`` candidates by ITC and by
ITM re-ranking of the ITC top ``eval.rerank_k`` (where the recipe has an ITM head), fine-grained
accuracy per attribute scored by ITM and by ITC, and Grad-CAM grounding (pointing game; ITM only).

Writes ``recipes-<device>.json`` (environment, settings, every run: overrides, full config, steps,
seconds, every metric) and ``recipes-<device>.md`` (one table per arm) in ``--out``, after every
finished run (a benchmark cut short keeps what it has), and prints the tables.

Run::

    python benchmarks/recipes_compare.py                                   # everything (over an hour)
    python benchmarks/recipes_compare.py --recipes mamo,clip --arms steps,seconds --steps 200 --seconds 60
    python benchmarks/recipes_compare.py --arms ablation --steps 400 --set eval.finegrained_samples=500
    python benchmarks/recipes_compare.py --quick --recipes mamo --out /tmp/bench   # smoke run, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import functools
import gc
import json
import math
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import maskmm
from maskmm.training import TrainingInterrupted, autocast, config_to_dict, get_recipe, seed_everything
from maskmm.training.cli import add_override_option

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attention_gpu import device_slug
from mamo_vs_contrastive import device_string

__all__ = [
    "ABLATION",
    "ARMS",
    "RECIPES",
    "main",
    "markdown_report",
    "parse_args",
    "run_overrides",
]

RECIPES = ("mamo", "maskvlm", "semmim", "albef", "clip")
RECIPE_TITLES = {"mamo": "MAMO", "maskvlm": "MaskVLM", "semmim": "SemMIM", "albef": "ALBEF", "clip": "CLIP"}
ARMS = ("steps", "seconds", "ablation")
SPLITS = ("train", "val", "heldout")
LOSSES = ("itc", "itm", "mlm", "mrm", "mim")

#: MAMO's objective ablation in the paper's order: (key, title, losses switched on).
ABLATION: tuple[tuple[str, str, frozenset[str]], ...] = (
    ("itc+itm", "ITC+ITM", frozenset({"itc", "itm"})),
    ("+mlm", "+MLM", frozenset({"itc", "itm", "mlm"})),
    ("+mlm+mim", "+MLM+MIM", frozenset({"itc", "itm", "mlm", "mim"})),
    ("+mrm", "+MRM", frozenset({"itc", "itm", "mrm"})),
    ("+mrm+mlm", "+MRM+MLM", frozenset({"itc", "itm", "mrm", "mlm"})),
    ("all", "all (MAMO)", frozenset(LOSSES)),
)

#: ``--quick``: a very small model at 32 px, tiny batches and evaluation sizes (each override is
#: applied only to the recipes whose config has that field).
QUICK = (
    "model.image_size=32",
    "data.image_size=32",
    "model.patch_size=8",
    "model.vision_dim=32",
    "model.text_dim=32",
    "model.vision_depth=1",
    "model.text_depth=1",
    "model.fusion_depth=2",
    "model.vision_heads=2",
    "model.text_heads=2",
    "model.fusion_heads=2",
    "model.embed_dim=16",
    "model.mlp_ratio=2.0",
    "losses.mim_decoder_depth=0",
    "image_masking.block_size=8",
    "itc.alpha_warmup_steps=0",
    "train.batch_size=4",
    "data.train_size=64",
    "optim.warmup_steps=1",
    "eval.num_candidates=8",
    "eval.rerank_k=2",
    "eval.batch_size=8",
    "eval.finegrained_samples=8",
    "eval.grounding_samples=2",
)
QUICK_STEPS, QUICK_SECONDS, QUICK_CALIBRATION = 3, 0.5, 3

_NO_STEP_LIMIT = 10**12  # the seconds arm runs until its time budget is spent
_WARMUP_STEPS = 2  # untimed steps before a calibration
_TMP = "<temporary folder>"


# --------------------------------------------------------------------------- arguments


def _names(text: str, allowed: Sequence[str], flag: str, p: argparse.ArgumentParser) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        p.error(f"{flag} takes a comma-separated list of {', '.join(allowed)}; got {text!r}")
    return list(dict.fromkeys(names))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Every recipe at equal steps and equal wall-clock, and MAMO's objective ablation."
    )
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipes (default: all five)")
    p.add_argument(
        "--arms",
        default=",".join(ARMS),
        help="comma-separated subset of steps,seconds,ablation (default: all)",
    )
    p.add_argument(
        "--steps", type=int, default=None, help="steps of the steps and ablation arms (default 800)"
    )
    p.add_argument(
        "--seconds", type=float, default=None, help="training wall-clock of the seconds arm (default 300)"
    )
    p.add_argument(
        "--horizon",
        default="measured",
        help="schedule horizon (train.steps) of the seconds arm: 'measured' (steps the budget allows at "
        "the recipe's measured s/step), 'preset' (the preset's train.steps) or a number of steps",
    )
    p.add_argument(
        "--calibration-steps",
        type=int,
        default=None,
        help="timed steps measuring s/step for --horizon measured when the steps arm is not run (default 20)",
    )
    p.add_argument(
        "--splits", nargs="+", default=["heldout", "val"], choices=SPLITS, help="evaluated built-in splits"
    )
    p.add_argument("--config", default="tiny", help="preset of every recipe (default: tiny)")
    add_override_option(p, help="config override applied to every run (repeatable)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: train.device of the preset)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default="benchmarks/results", help="folder of the JSON and Markdown results")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: a tiny model, {QUICK_STEPS} steps, {QUICK_SECONDS:g} s, small evaluation sizes",
    )
    args = p.parse_args(argv)
    args.recipes = _names(args.recipes, RECIPES, "--recipes", p)
    args.arms = _names(args.arms, ARMS, "--arms", p)
    if args.steps is None:
        args.steps = QUICK_STEPS if args.quick else 800
    if args.seconds is None:
        args.seconds = QUICK_SECONDS if args.quick else 300.0
    if args.calibration_steps is None:
        args.calibration_steps = QUICK_CALIBRATION if args.quick else 20
    if args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        p.error(f"--seconds must be a finite number > 0, got {args.seconds}")
    if args.calibration_steps < 1:
        p.error(f"--calibration-steps must be >= 1, got {args.calibration_steps}")
    if args.threads < 0:
        p.error(f"--threads must be >= 0, got {args.threads}")
    if args.horizon not in ("measured", "preset"):
        try:
            args.horizon = int(args.horizon)
        except ValueError:
            p.error(f"--horizon must be 'measured', 'preset' or a number of steps, got {args.horizon!r}")
        if args.horizon < 1:
            p.error(f"--horizon must be >= 1, got {args.horizon}")
    args.splits = list(dict.fromkeys(args.splits))
    return args


# --------------------------------------------------------------------------- configs


def _flat_keys(d: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat_keys(v, f"{prefix}{k}.")
        else:
            out.add(f"{prefix}{k}")
    return out


@functools.cache
def _preset(recipe: Any, preset: str) -> tuple[frozenset[str], int]:
    """The config fields (dotted) of ``recipe`` and its preset's ``train.steps`` (loaded once)."""
    cfg = recipe.load_config(preset)
    return frozenset(_flat_keys(config_to_dict(cfg))), cfg.train.steps


def _quick_overrides(recipe: Any, preset: str) -> list[str]:
    """The :data:`QUICK` overrides whose field exists in ``recipe``'s config."""
    keys = _preset(recipe, preset)[0]
    return [o for o in QUICK if o.split("=", 1)[0] in keys]


def run_overrides(
    args: argparse.Namespace,
    recipe: Any,
    out_dir: str,
    *,
    steps: int,
    max_seconds: float = 0.0,
    own: Sequence[str] = (),
) -> list[str]:
    """Overrides of one run: benchmark settings, ``--quick``, ``--set``, then the run's budget and own."""
    fixed = [
        "train.eval_every=0",
        "train.save_every=0",
        "log.progress=false",
        "log.plot=false",
        "log.tensorboard=false",
        "log.wandb=false",
        f"train.out_dir={out_dir}",
    ]
    quick = _quick_overrides(recipe, args.config) if args.quick else []
    budget = [
        f"train.steps={steps}",
        f"train.max_seconds={max_seconds}",
        f"train.threads={args.threads}",
        f"eval.splits=[{', '.join(args.splits)}]",
    ]
    return [*fixed, *quick, *args.overrides, *budget, *own]


def ablation_overrides(on: frozenset[str]) -> list[str]:
    return [f"losses.{x}={'true' if x in on else 'false'}" for x in LOSSES]


# --------------------------------------------------------------------------- runs


class _Isolated:
    """Restore the torch thread count, reset ``torch._dynamo`` and free memory after a run."""

    def __enter__(self) -> _Isolated:
        self.threads = torch.get_num_threads()
        return self

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.threads)
        dynamo = sys.modules.get("torch._dynamo")
        if dynamo is not None:
            dynamo.reset()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _summary(result: Any, cfg: Any) -> dict[str, Any]:
    last = next((r for r in reversed(result.history) if "loss" in r), {})
    return {
        "steps": result.step,
        "schedule_steps": cfg.train.steps,
        "train_seconds": result.train_seconds,
        "seconds_per_step": result.train_seconds / max(result.step, 1),
        "fit_seconds": result.seconds,
        "max_seconds": cfg.train.max_seconds,
        "stopped_early": result.stopped_early,
        "past_schedule": result.step > cfg.train.steps,
        "final_loss": last.get("loss"),
    }


def train_and_evaluate(
    recipe: Any, cfg: Any, device: str | None, splits: list[str], *, until_budget: bool
) -> dict[str, Any]:
    """Train one run (``until_budget``: past ``train.steps`` until ``train.max_seconds`` is spent) and
    evaluate it; returns its summary with ``metrics`` (:func:`maskmm.evaluation.run.evaluate`)."""
    from maskmm.evaluation.run import evaluate
    from maskmm.training import Trainer

    with _Isolated():
        trainer = Trainer(recipe, cfg, device=device, log=False)
        try:
            result = trainer.fit(steps=_NO_STEP_LIMIT if until_budget else None, progress=False)
            summary = _summary(result, cfg)
            model = trainer.model
            summary["has_itc"], summary["has_itm"] = bool(model.has_itc), bool(model.has_itm)
            seed_everything(cfg.train.seed)  # the evaluation starts from the same state in every run
            t0 = time.perf_counter()
            with autocast(trainer.device, trainer.amp_dtype):
                metrics = evaluate(model, trainer.tokenizer, cfg, splits)
            summary["eval_seconds"] = time.perf_counter() - t0
            summary["metrics"] = metrics
            summary["device"] = str(trainer.device)
        finally:
            trainer.close()
            del trainer
    return summary


def calibrate(recipe: Any, cfg: Any, device: str | None, steps: int) -> float:
    """Training seconds per step of ``cfg``: ``steps`` timed steps after :data:`_WARMUP_STEPS`."""
    from maskmm.training import Trainer

    with _Isolated():
        trainer = Trainer(recipe, cfg, device=device, log=False)
        try:
            trainer.fit(steps=_WARMUP_STEPS, progress=False)
            result = trainer.fit(steps=_WARMUP_STEPS + steps, progress=False)
        finally:
            trainer.close()
            del trainer
    return result.train_seconds / max(result.step - _WARMUP_STEPS, 1)


# --------------------------------------------------------------------------- results


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _json_safe(value: Any) -> Any:
    """NaN/inf -> ``None`` (strict JSON), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _metric(run: dict[str, Any], split: str, part: str, key: str) -> Any:
    return run.get("metrics", {}).get(split, {}).get(part, {}).get(key)


def _rows(runs: dict[str, dict[str, Any]], splits: list[str]) -> list[tuple[str, list[str]]]:
    """``(metric, [value per run])`` rows of one arm's table."""
    names = list(runs)

    def row(label: str, get: Any, digits: int = 1) -> tuple[str, list[str]]:
        return label, [_fmt(get(runs[n]), digits) for n in names]

    rows = [
        row("steps", lambda r: r.get("steps")),
        row("s/step", lambda r: r.get("seconds_per_step"), 3),
        row("training seconds", lambda r: r.get("train_seconds")),
        row("schedule horizon (steps)", lambda r: r.get("schedule_steps")),
    ]
    for split in splits:
        for scorer, title in (("itc", "ITC"), ("itm", "ITM re-rank")):
            for way, label in (("tr", "TR"), ("ir", "IR")):
                key = f"{scorer}_{way}_r1"
                rows.append(
                    row(
                        f"{split}: R@1 {label} ({title})",
                        lambda r, k=key, s=split: _metric(r, s, "retrieval", k),
                    )
                )
    for split in splits:
        for part, title in (("finegrained", "ITM"), ("finegrained_itc", "ITC")):
            attrs: list[str] = []
            for n in names:
                for k in runs[n].get("metrics", {}).get(split, {}).get(part, {}):
                    if k not in attrs:
                        attrs.append(k)
            attrs = [k for k in attrs if k != "mean"] + (["mean"] if "mean" in attrs else [])
            for attr in attrs:
                rows.append(
                    row(
                        f"{split}: fine-grained {title} {attr}",
                        lambda r, a=attr, s=split, pt=part: _metric(r, s, pt, a),
                    )
                )
    for split in splits:
        rows.append(
            row(f"{split}: grounding pointing", lambda r, s=split: _metric(r, s, "grounding", "pointing"))
        )
    return rows


def markdown_table(runs: dict[str, dict[str, Any]], titles: dict[str, str], splits: list[str]) -> str:
    """Rows = metrics (R@1, accuracies and pointing in %), columns = runs; ``–``: not available."""
    header = ["metric", *(titles.get(n, n) for n in runs)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", *["---:"] * len(runs)]) + "|"]
    lines += ["| " + " | ".join([name, *vals]) + " |" for name, vals in _rows(runs, splits)]
    return "\n".join(lines)


def _arm_heading(arm: str, s: dict[str, Any]) -> str:
    if arm == "steps":
        return f"## Equal steps ({s['steps']} steps each; schedule horizon = steps)"
    if arm == "seconds":
        h = s["horizon"]
        how = {
            "measured": "the steps the budget allows at each recipe's measured s/step",
            "preset": "each preset's train.steps",
        }.get(h, f"{h} steps for every recipe")
        return f"## Equal training wall-clock ({s['seconds']:g} s each; schedule horizon: {how})"
    return f"## MAMO objective ablation, paper order ({s['steps']} steps each)"


def markdown_report(report: dict[str, Any]) -> str:
    """The whole Markdown file: environment, settings, then one table per arm that has runs."""
    env, s = report["environment"], report["settings"]
    lines = [
        f"# Recipes compared on the built-in data (`{s['config']}` presets)",
        "",
        f"Device: {env['device']}; torch {env['torch']}, maskmm {env['maskmm']}; {env['date']}.",
        f"Command: `{env['command']}`.",
        f"Splits {', '.join(s['splits'])}; seed {s['seed']}; shared overrides "
        f"{s['overrides'] or 'none'}{'; --quick' if s['quick'] else ''}. Retrieval R@1 (%) over "
        f"{s['candidates']} candidates each way, by ITC and by ITM re-ranking of the ITC top "
        f"{s['rerank_k']}; fine-grained accuracy (%) on {s['finegrained_samples']} images (true caption "
        "scored above a one-attribute distractor) by ITM and by ITC; grounding: Grad-CAM pointing game "
        f"(%) on {s['grounding_samples']} images (ITM only). `–`: the recipe has no such head.",
    ]
    for arm in ARMS:
        runs = report["runs"].get(arm)
        if not runs:
            continue
        titles = RECIPE_TITLES if arm != "ablation" else {k: t for k, t, _ in ABLATION}
        lines += ["", _arm_heading(arm, s), "", markdown_table(runs, titles, s["splits"])]
        notes = [f"{titles.get(n, n)}: {r['reused_from']}" for n, r in runs.items() if r.get("reused_from")]
        notes += [f"{titles.get(n, n)} failed: {r['error']}" for n, r in runs.items() if r.get("error")]
        if notes:
            lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join([*lines, ""])


def write_results(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path, str]:
    """Write ``recipes-<device>.json`` and ``.md``; return both paths and the Markdown text."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"recipes-{device_slug(report['environment']['device'])}"
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(_json_safe(report), indent=2) + "\n", encoding="utf-8")
    text = markdown_report(report)
    md_path.write_text(text, encoding="utf-8")
    return json_path, md_path, text


# --------------------------------------------------------------------------- main


@dataclasses.dataclass
class _Run:
    arm: str
    name: str  # recipe (steps, seconds) or ablation variant
    recipe: Any
    own: list[str]  # the run's own overrides (the ablation's loss switches)
    out_dir: str
    cfg: Any = None  # validated before the first run (a seconds-arm run: with the preset's steps)


def _plan(args: argparse.Namespace, recipes: dict[str, Any], tmp: str) -> list[_Run]:
    """Every run, in order."""
    plan = [
        (arm, n, recipes[n], []) for arm in ("steps", "seconds") if arm in args.arms for n in args.recipes
    ]
    if "ablation" in args.arms:
        plan += [("ablation", key, recipes["mamo"], ablation_overrides(on)) for key, _, on in ABLATION]
    return [
        _Run(arm, name, recipe, own, str(Path(tmp) / f"{i:02d}-{arm}-{name.replace('+', 'plus-')}"))
        for i, (arm, name, recipe, own) in enumerate(plan)
    ]


def _overrides_of(args: argparse.Namespace, run: _Run, horizon: int | None = None) -> list[str]:
    """Overrides of ``run`` (a seconds-arm run without ``horizon``: the preset's steps)."""
    if run.arm == "seconds":
        steps = horizon if horizon is not None else _preset(run.recipe, args.config)[1]
        return run_overrides(
            args, run.recipe, run.out_dir, steps=steps, max_seconds=args.seconds, own=run.own
        )
    return run_overrides(args, run.recipe, run.out_dir, steps=args.steps, own=run.own)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    _preset.cache_clear()
    threads_before = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        return _main(args, argv)
    finally:
        torch.set_num_threads(threads_before)


def _main(args: argparse.Namespace, argv: list[str]) -> int:
    needed = list(args.recipes) if {"steps", "seconds"} & set(args.arms) else []
    if "ablation" in args.arms and "mamo" not in needed:
        needed.append("mamo")
    with tempfile.TemporaryDirectory(prefix="recipes-compare-") as tmp:
        try:  # every recipe and config is checked before the first run starts
            recipes = {name: get_recipe(name) for name in needed}
            runs = _plan(args, recipes, tmp)
            for run in runs:
                run.cfg = run.recipe.load_config(args.config, _overrides_of(args, run))
            first_cfg = runs[0].cfg
            device = _resolve_device(args.device, first_cfg)
        except (ValueError, TypeError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        report: dict[str, Any] = {
            "benchmark": "recipes-compare",
            "environment": {
                "device": device_string(device),
                "torch": torch.__version__,
                "maskmm": maskmm.__version__,
                "python": platform.python_version(),
                "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "command": shlex.join(["python", "benchmarks/recipes_compare.py", *argv]),
            },
            "settings": {
                "config": args.config,
                "recipes": args.recipes,
                "arms": args.arms,
                "steps": args.steps,
                "seconds": args.seconds,
                "horizon": args.horizon,
                "calibration_steps": args.calibration_steps,
                "splits": args.splits,
                "overrides": args.overrides,
                "quick": args.quick,
                "threads": args.threads,
                "seed": first_cfg.train.seed,
                "candidates": first_cfg.eval.num_candidates,
                "rerank_k": first_cfg.eval.rerank_k,
                "finegrained_samples": first_cfg.eval.finegrained_samples,
                "grounding_samples": first_cfg.eval.grounding_samples,
            },
            "runs": {arm: {} for arm in args.arms},
        }
        failed = 0
        for run in runs:
            try:
                entry = _one_run(args, report, run)
            except TrainingInterrupted as e:
                done = any(report["runs"].values())
                kept = f"the finished runs are in {args.out}" if done else "no run finished"
                print(f"[{run.arm}/{run.name}] interrupted by signal {e.signum}: {kept}", file=sys.stderr)
                return 128 + e.signum
            failed += "error" in entry
            report["runs"][run.arm][run.name] = entry
            json_path, md_path, text = write_results(report, Path(args.out))
    print(text)
    print(f"wrote {json_path} and {md_path}")
    return 1 if failed else 0


def _one_run(args: argparse.Namespace, report: dict[str, Any], run: _Run) -> dict[str, Any]:
    """Train and evaluate one run (or reuse an identical one); a failure is recorded as ``error``."""
    tag = f"[{run.arm}/{run.name}]"
    entry: dict[str, Any] = {"recipe": run.recipe.name}
    try:
        overrides, cfg = _overrides_of(args, run), run.cfg
        if run.arm == "seconds":
            horizon, entry["horizon_from"] = _horizon(args, report, run)
            overrides = _overrides_of(args, run, horizon)
            cfg = run.recipe.load_config(args.config, overrides)
        config = config_to_dict(cfg)
        config["train"]["out_dir"] = _TMP  # nothing is written there (log=False)
        entry["overrides"] = [
            f"train.out_dir={_TMP}" if o.startswith("train.out_dir=") else o for o in overrides
        ]
        entry["config"] = config
        reused = _reusable(report, run.arm, config)
        if reused is not None:
            entry.update({k: v for k, v in reused.items() if k not in entry})
            entry["reused_from"] = "the mamo run of the equal-steps arm (identical config and seed)"
            print(f"{tag} same config as the equal-steps mamo run: its result is reused", flush=True)
            return entry
        budget = f"{cfg.train.max_seconds:g} s" if run.arm == "seconds" else f"{cfg.train.steps} steps"
        print(f"{tag} training for {budget} (schedule over {cfg.train.steps} steps)", flush=True)
        until_budget = run.arm == "seconds"
        entry.update(train_and_evaluate(run.recipe, cfg, args.device, args.splits, until_budget=until_budget))
        print(
            f"{tag} {entry['steps']} steps in {entry['train_seconds']:.1f} s "
            f"({entry['seconds_per_step']:.3f} s/step); evaluated in {entry['eval_seconds']:.1f} s",
            flush=True,
        )
    except TrainingInterrupted:  # SIGTERM/SIGINT: the benchmark stops, not just this run
        raise
    except Exception as e:  # one failing run must not lose the others
        entry["error"] = f"{type(e).__name__}: {e}"
        print(f"{tag} failed: {entry['error']}", file=sys.stderr, flush=True)
    return entry


def _resolve_device(device: str | None, cfg: Any) -> torch.device:
    from maskmm.training import select_device

    return select_device(device if device is not None else cfg.train.device, 0, field="--device")


def _horizon(args: argparse.Namespace, report: dict[str, Any], run: _Run) -> tuple[int, str]:
    """The seconds-arm schedule horizon of ``run`` and how it was chosen (see ``--horizon``)."""
    if isinstance(args.horizon, int):
        return args.horizon, "--horizon"
    if args.horizon == "preset":
        return _preset(run.recipe, args.config)[1], "the preset's train.steps"
    ran = report["runs"].get("steps", {}).get(run.name, {})
    if ran.get("seconds_per_step"):
        s_per_step, how = ran["seconds_per_step"], "the equal-steps run's s/step"
    else:
        warm = _WARMUP_STEPS + args.calibration_steps
        cfg = run.recipe.load_config(args.config, run_overrides(args, run.recipe, run.out_dir, steps=warm))
        s_per_step = calibrate(run.recipe, cfg, args.device, args.calibration_steps)
        how = f"s/step of a {args.calibration_steps}-step calibration run"
    horizon = max(1, math.ceil(args.seconds / s_per_step))
    return horizon, f"{args.seconds:g} s / {s_per_step:.4f} s per step ({how})"


def _reusable(report: dict[str, Any], arm: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """The equal-steps mamo run when the ablation's ``all`` row has its config (the same run)."""
    if arm != "ablation":
        return None
    done = report["runs"].get("steps", {}).get("mamo")
    if not done or done.get("error") or done.get("config") != config:
        return None
    return done


if __name__ == "__main__":
    raise SystemExit(main())
