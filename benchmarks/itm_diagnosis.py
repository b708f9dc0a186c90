"""Controlled runs behind the fusion's ITM: what makes ITM re-ranking beat ITC and relations learnable.

Each variant is MAMO's ``tiny`` preset (or ``--recipe``/``--config``) with one change (``--set``
overrides), trained by ``maskmm-train`` with the same seed and the same number of steps, then
evaluated by ``maskmm-eval`` on the built-in held-out and val splits, once per ITM re-rank score
(``eval.rerank_itc_weight``: 0 = the ITM probability alone, as ALBEF; ``w > 0`` = ITM log-odds plus
``w`` times the ITC cosine). Runs go to ``--runs-dir/<variant>``; a variant whose folder already holds
``model.pt`` is not trained again, and an evaluation whose ``eval-w<weight>.json`` is there is not run
again (so a cut-short invocation resumes where it stopped); the
JSON keeps each run's ``config.yaml``, so what a reused run trained with is on record.

Writes ``itm-diagnosis-<device>.json`` (environment, every variant: overrides, training seconds,
every metric per re-rank weight) and ``itm-diagnosis-<device>.md`` to ``--out``.

Run::

    python benchmarks/itm_diagnosis.py --parallel 2 --runs-dir /tmp/itm-runs      # every variant
    python benchmarks/itm_diagnosis.py --variants baseline,merged --parallel 2 --runs-dir /tmp/itm-runs
    python benchmarks/itm_diagnosis.py --variants baseline --set train.steps=20 --weights 0 --quick
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

import maskmm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attention_gpu import device_slug
from mamo_vs_contrastive import cpu_model, device_string

#: variant -> (what it changes, overrides). ``baseline`` is the preset as shipped.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "baseline": ("the preset", []),
    "no_facts": ("captions true of other batch images stay negatives", ["data.pair_facts=false"]),
    "positive": ("true captions are ITC positives (shared targets)", ["itc.false_negatives=positive"]),
    "merged": ("merged fusion (one stream over image and text tokens)", ["model.fusion=merged"]),
    "merged_positive": (
        "merged fusion, true captions ITC positives", ["model.fusion=merged", "itc.false_negatives=positive"]
    ),
    "merged_no_facts": (
        "merged fusion, true captions stay negatives", ["model.fusion=merged", "data.pair_facts=false"]
    ),
    "hard_from_0": ("hard ITM negatives from the first step", ["itm.easy_steps=0", "itm.ramp_steps=0"]),
    "fusion_depth_4": ("4 fusion layers instead of 2", ["model.fusion_depth=4"]),
    "itm_mean": ("ITM head on the mean of the fused states (not the text CLS)", ["losses.itm_input=mean"]),
    "itc_itm_only": (
        "ITC + ITM only (no MLM, MRM, MIM)", ["losses.mlm=false", "losses.mrm=false", "losses.mim=false"]
    ),
}  # fmt: skip

SUMMARY = [
    ("ITC R@1 TR / IR", "retrieval", ("itc_tr_r1", "itc_ir_r1")),
    ("ITM re-rank R@1 TR / IR", "retrieval", ("itm_tr_r1", "itm_ir_r1")),
    ("relation by ITM", "finegrained", ("relation",)),
    ("position by ITM", "finegrained", ("position",)),
    ("fine-grained ITM mean", "finegrained", ("mean",)),
    ("relation by ITC", "finegrained_itc", ("relation",)),
    ("grounding pointing", "grounding", ("pointing",)),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    p.add_argument("--recipe", default="mamo")
    p.add_argument("--config", default="tiny")
    p.add_argument("--set", action="append", default=[], help="override applied to every variant")
    p.add_argument("--weights", default="0,14.3", help="eval.rerank_itc_weight values to evaluate")
    p.add_argument("--splits", default="heldout,val")
    p.add_argument("--parallel", type=int, default=1, help="variants trained at once (1 thread each if > 1)")
    p.add_argument("--runs-dir", default="runs/itm-diagnosis")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--quick", action="store_true", help="smoke run: 100 candidates, small fine-grained sets")
    args = p.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    args.variant_names = names
    args.weight_values = [float(w) for w in args.weights.split(",") if w]
    return args


def _train_cmd(args: argparse.Namespace, name: str, out: Path) -> list[str]:
    sets = [*VARIANTS[name][1], *args.set, "log.progress=false", "log.plot=false", "train.eval_every=0"]
    if args.parallel > 1:
        sets.append("train.threads=1")
    cmd = [
        "maskmm-train",
        "--recipe",
        args.recipe,
        "--config",
        args.config,
        "--out-dir",
        str(out),
        "--overwrite",
    ]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def _eval_cmd(args: argparse.Namespace, out: Path, weight: float, json_path: Path) -> list[str]:
    cmd = ["maskmm-eval", "--checkpoint", str(out), "--json", str(json_path)]
    cmd += ["--splits", *args.splits.split(","), "--set", f"eval.rerank_itc_weight={weight}"]
    if args.quick:
        cmd += ["--set", "eval.num_candidates=100", "--set", "eval.finegrained_samples=20"]
        cmd += ["--set", "eval.grounding_samples=0"]
    return cmd


def train_all(args: argparse.Namespace, runs: Path) -> dict[str, float]:
    """Train the variants without a finished run folder, ``--parallel`` at a time; training seconds."""
    todo = [n for n in args.variant_names if not (runs / n / "model.pt").exists()]
    seconds: dict[str, float] = {}
    running: list[tuple[str, subprocess.Popen, float]] = []
    while todo or running:
        while todo and len(running) < args.parallel:
            name = todo.pop(0)
            (runs / name).parent.mkdir(parents=True, exist_ok=True)
            log = open(runs / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
            proc = subprocess.Popen(_train_cmd(args, name, runs / name), stdout=log, stderr=subprocess.STDOUT)
            running.append((name, proc, time.monotonic()))
        time.sleep(2)
        for item in list(running):
            name, proc, start = item
            if proc.poll() is not None:
                running.remove(item)
                if proc.returncode:
                    raise RuntimeError(
                        f"variant {name!r} failed (exit {proc.returncode}); see {runs / name}.log"
                    )
                seconds[name] = time.monotonic() - start
    return seconds


def _train_seconds(run: Path) -> float | None:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    times = [r["time"] for r in rows if "time" in r and "loss" in r]
    return times[-1] if times else None


def evaluate_all(args: argparse.Namespace, runs: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in args.variant_names:
        entry = {"changes": VARIANTS[name][0], "overrides": VARIANTS[name][1] + args.set, "by_weight": {}}
        entry["train_seconds"] = _train_seconds(runs / name)
        entry["config_yaml"] = (runs / name / "config.yaml").read_text()  # what the run really used
        for w in args.weight_values:
            path = runs / name / f"eval-w{w:g}.json"
            if not path.exists():  # evaluated before: kept (delete the file to evaluate again)
                subprocess.run(_eval_cmd(args, runs / name, w, path), check=True, stdout=subprocess.DEVNULL)
            entry["by_weight"][f"{w:g}"] = json.loads(path.read_text())
        results[name] = entry
    return results


def _cell(res: dict[str, Any], split: str, part: str, keys: tuple[str, ...]) -> str:
    vals = [res.get(split, {}).get(part, {}).get(k) for k in keys]
    return " / ".join("–" if v is None else f"{v:.1f}" for v in vals)


def _count(value: float | None) -> str:
    return "?" if value is None else f"{value:,.0f}"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# ITM diagnosis: {report['recipe']} `{report['config']}`, one change per row",
        "",
        f"Device: {report['device']}; torch {report['torch']}, maskmm {report['maskmm']}; {report['date']}.",
        f"Command: `{report['command']}`. R@1 over {_count(report.get('candidates'))} candidates; "
        "accuracies in %. Every run's config (`config_yaml`) and training seconds are in the JSON.",
        "",
    ]
    for split in report["splits"]:
        for w in report["weights"]:
            lines += [
                f"## {split}, re-rank score: "
                + ("ITM alone" if w == "0" else f"ITM log-odds + {w} x ITC cosine"),
                "",
            ]
            head = ["variant", "change", *[s[0] for s in SUMMARY]]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for name, entry in report["variants"].items():
                res = entry["by_weight"][w]
                cells = [_cell(res, split, part, keys) for _, part, keys in SUMMARY]
                lines.append("| " + " | ".join([name, entry["changes"], *cells]) + " |")
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = Path(args.runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    train_all(args, runs)
    variants = evaluate_all(args, runs)
    first = next(iter(variants.values()))["by_weight"]
    some = next(iter(first.values()))
    split0 = args.splits.split(",")[0]
    report = {
        "recipe": args.recipe,
        "config": args.config,
        "device": device_string(torch.device("cpu")),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "maskmm": maskmm.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(
            ["python", "benchmarks/itm_diagnosis.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "candidates": some.get(split0, {}).get("retrieval", {}).get("candidates"),
        "splits": args.splits.split(","),
        "weights": [f"{w:g}" for w in args.weight_values],
        "variants": variants,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"itm-diagnosis-{device_slug(cpu_model())}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (out / f"{stem}.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
