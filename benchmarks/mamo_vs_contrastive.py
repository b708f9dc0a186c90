"""MAMO against the same code trained contrastive-only (ITC), at equal training wall-clock.

Both arms are built from one preset (default ``tiny``), seed, batch size and data stream; the
contrastive arm switches every loss but ITC off (``losses.itm/mlm/mrm/mim=false``). In one
process, run one after the other, each arm trains for ``--seconds`` of training wall-clock
(``train.max_seconds``; periodic evaluations and checkpoints are off). The learning-rate schedule of
both arms runs over ``--steps`` (default: the preset's ``train.steps``); an arm that reaches its
horizon before the budget is spent trains on at the final learning rate. Then both are evaluated on
every ``eval.splits`` split (default ``val`` and ``heldout``):

- ITC retrieval R@1/5/10, image->text (TR) and text->image (IR), over ``eval.num_candidates``
  (1,000 in the presets) images with one caption each (:func:`evaluate_retrieval`, no ITM re-ranking);
- fine-grained accuracy per attribute (true caption against one that changes a single colour, shape,
  size, position or relation), scored by the ITC cosine similarity for both arms and by the ITM
  match probability for MAMO (:func:`evaluate_finegrained`).

Writes ``mamo-vs-contrastive-<device>.json`` (environment, both full configs, steps reached,
training seconds, every metric) and a Markdown table ``mamo-vs-contrastive-<device>.md`` beside it,
and prints the table.

Run::

    python benchmarks/mamo_vs_contrastive.py --seconds 360 --out benchmarks/results
    python benchmarks/mamo_vs_contrastive.py --seconds 60 --steps 150 --set eval.splits=[heldout]
    # a horizon of its own for the (faster) contrastive arm
    python benchmarks/mamo_vs_contrastive.py --seconds 360 --contrastive-set train.steps=2000
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from maskmm.models.mamo.config import MAMOConfig, config_to_dict, load_config

import maskmm
from maskmm.training import autocast
from maskmm.training.cli import add_override_option

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attention_gpu import device_slug

__all__ = ["CONTRASTIVE_ONLY", "device_string", "main", "markdown_table", "parse_args"]

ARMS = ("mamo", "contrastive")
ARM_TITLES = {"mamo": "MAMO", "contrastive": "contrastive-only (ITC)"}
CONTRASTIVE_ONLY = ("losses.itm=false", "losses.mlm=false", "losses.mrm=false", "losses.mim=false")
_NO_STEP_LIMIT = 10**12  # the loop runs until the time budget is spent


# --------------------------------------------------------------------------- arguments, configs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Tiny MAMO against the same code trained contrastive-only, at equal training wall-clock."
    )
    p.add_argument("--seconds", type=float, default=360.0, help="training wall-clock of each arm (s)")
    p.add_argument("--out", default="benchmarks/results", help="folder of the JSON and Markdown results")
    p.add_argument("--config", default="tiny", help="preset name or YAML path shared by both arms")
    add_override_option(p, help="config override applied to both arms (repeatable)")
    add_override_option(
        p, "--mamo-set", "mamo_overrides", "config override applied to the MAMO arm only (repeatable)"
    )
    add_override_option(
        p,
        "--contrastive-set",
        "contrastive_overrides",
        "config override applied to the contrastive arm only, after the loss switches (repeatable)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="learning-rate schedule horizon of both arms (default: the preset's train.steps)",
    )
    p.add_argument(
        "--finegrained-samples", type=int, default=500, help="images of the fine-grained tests per split"
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        p.error(f"--seconds must be a finite number > 0, got {args.seconds}")
    if args.steps is not None and args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    if args.finegrained_samples < 1:
        p.error(f"--finegrained-samples must be >= 1, got {args.finegrained_samples}")
    if args.threads < 0:
        p.error(f"--threads must be >= 0, got {args.threads}")
    return args


def arm_overrides(args: argparse.Namespace, arm: str, out_dir: str) -> list[str]:
    """``--set`` style overrides of one arm: benchmark settings, then ``--set``, then the arm's own."""
    fixed = [
        "train.eval_every=0",
        "train.save_every=0",
        "log.progress=false",
        "log.plot=false",
        f"train.out_dir={out_dir}",
    ]
    budget = [f"train.max_seconds={args.seconds}", f"train.threads={args.threads}"]
    if args.steps is not None:
        budget.append(f"train.steps={args.steps}")
    own = list(args.mamo_overrides) if arm == "mamo" else [*CONTRASTIVE_ONLY, *args.contrastive_overrides]
    return [*fixed, *args.overrides, *budget, *own]


def arm_configs(args: argparse.Namespace, out_dir: str) -> dict[str, MAMOConfig]:
    """The validated config of each arm (``ValueError``/``TypeError`` naming a bad field)."""
    return {arm: load_config(args.config, arm_overrides(args, arm, out_dir)) for arm in ARMS}


# --------------------------------------------------------------------------- environment


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def device_string(device: torch.device) -> str:
    """``"cpu: <model>, <n> threads"`` or ``"cuda: <GPU name>"``."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    n = torch.get_num_threads()
    return f"cpu: {cpu_model()}, {n} thread{'s' if n != 1 else ''}"


# --------------------------------------------------------------------------- training, evaluation


def train_arm(cfg: MAMOConfig, arm: str) -> tuple[Any, dict[str, Any]]:
    """Train one arm for ``cfg.train.max_seconds``; return its trainer and a summary of the run."""
    from maskmm.training import Trainer

    print(f"[{arm}] training for {cfg.train.max_seconds:g} s (schedule over {cfg.train.steps} steps)")
    trainer = Trainer("mamo", cfg, log=False)
    result = trainer.fit(steps=_NO_STEP_LIMIT, progress=False)
    last = next((r for r in reversed(result.history) if "loss" in r), {})
    summary = {
        "steps": result.step,
        "train_seconds": result.train_seconds,
        "seconds_per_step": result.train_seconds / max(result.step, 1),
        "schedule_steps": cfg.train.steps,
        "past_schedule": result.step > cfg.train.steps,
        "final_loss": last.get("loss"),
        "final_loss_itc": last.get("loss_itc"),
    }
    print(
        f"[{arm}] {result.step} steps in {result.train_seconds:.1f} s "
        f"({summary['seconds_per_step']:.3f} s/step), last loss {last.get('loss', float('nan')):.4f}"
    )
    return trainer, summary


def evaluate_arm(trainer: Any, finegrained_samples: int) -> dict[str, dict[str, dict[str, float]]]:
    """``{split: {"retrieval": ..., "finegrained_itc": ..., "finegrained_itm": ...}}`` of one arm.

    ``finegrained_itm`` is left out for a model without an ITM head.
    """
    from maskmm.evaluation.run import evaluate_finegrained, evaluate_retrieval

    cfg, model, tok = trainer.cfg, trainer.model, trainer.tokenizer
    scorers = ["itc"] + (["itm"] if model.student.itm_head is not None else [])
    out: dict[str, dict[str, dict[str, float]]] = {}
    with autocast(trainer.device, trainer.amp_dtype):
        for split in cfg.eval.splits:
            res = {"retrieval": evaluate_retrieval(model, tok, cfg, split, itm=False)}
            for scorer in scorers:
                res[f"finegrained_{scorer}"] = evaluate_finegrained(
                    model, tok, cfg, split, finegrained_samples, scorer=scorer
                )
            out[split] = res
    return out


# --------------------------------------------------------------------------- results


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _rows(arms: dict[str, dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """``(metric, [value per arm])`` rows of the Markdown table."""
    names = list(arms)
    rows = [
        ("steps reached", [_fmt(arms[a]["steps"]) for a in names]),
        ("training seconds", [_fmt(arms[a]["train_seconds"]) for a in names]),
    ]
    splits = list(next(iter(arms.values()))["metrics"])
    for split in splits:
        for key, label in (("itc_tr_r1", "TR"), ("itc_ir_r1", "IR")):
            vals = [arms[a]["metrics"].get(split, {}).get("retrieval", {}).get(key) for a in names]
            rows.append((f"{split}: ITC R@1 {label}", [_fmt(v) for v in vals]))
    for split in splits:
        for scorer in ("itc", "itm"):
            part = f"finegrained_{scorer}"
            attrs: list[str] = []
            for a in names:
                for k in arms[a]["metrics"].get(split, {}).get(part, {}):
                    if k not in attrs:
                        attrs.append(k)
            attrs = [k for k in attrs if k != "mean"] + (["mean"] if "mean" in attrs else [])
            for attr in attrs:
                vals = [arms[a]["metrics"].get(split, {}).get(part, {}).get(attr) for a in names]
                rows.append((f"{split}: fine-grained {scorer.upper()} {attr}", [_fmt(v) for v in vals]))
    return rows


def markdown_table(arms: dict[str, dict[str, Any]]) -> str:
    """One table: rows = metrics (R@1 and fine-grained accuracy in %), columns = arms."""
    header = ["metric", *(ARM_TITLES.get(a, a) for a in arms)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", *["---:"] * len(arms)]) + "|"]
    lines += ["| " + " | ".join([name, *vals]) + " |" for name, vals in _rows(arms)]
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    """NaN/inf -> ``None`` (strict JSON), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_results(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path, str]:
    """Write the JSON and Markdown files; return both paths and the Markdown table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"mamo-vs-contrastive-{device_slug(report['environment']['device'])}"
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(_json_safe(report), indent=2) + "\n", encoding="utf-8")
    env, s = report["environment"], report["settings"]
    table = markdown_table(report["arms"])
    head = [
        f"# MAMO vs contrastive-only at equal training wall-clock ({s['seconds']:g} s per arm)",
        "",
        f"Device: {env['device']}; torch {env['torch']}, maskmm {env['maskmm']}; {env['date']}.",
        f"Preset `{s['config']}`; schedule horizon {s['schedule_steps']} steps; shared overrides "
        f"{s['overrides'] or 'none'}; MAMO-only overrides {s['mamo_overrides'] or 'none'}; "
        f"contrastive-only overrides {s['contrastive_overrides']}.",
        f"ITC retrieval over {s['candidates']} candidates; fine-grained tests on {s['finegrained_samples']} "
        "images per split (accuracy in %: true caption scored above a one-attribute distractor).",
        "",
    ]
    md_path.write_text("\n".join([*head, table, ""]), encoding="utf-8")
    return json_path, md_path, table


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="mamo-vs-contrastive-") as tmp:
        try:
            cfgs = arm_configs(args, tmp)
        except (ValueError, TypeError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        trainers, summaries = {}, {}
        for arm in ARMS:  # train both, one after the other, then evaluate both
            trainers[arm], summaries[arm] = train_arm(cfgs[arm], arm)
        arms: dict[str, dict[str, Any]] = {}
        device = trainers["mamo"].device
        for arm in ARMS:
            t0 = time.perf_counter()
            metrics = evaluate_arm(trainers[arm], args.finegrained_samples)
            print(f"[{arm}] evaluated in {time.perf_counter() - t0:.1f} s")
            trainers[arm].close()
            config = config_to_dict(cfgs[arm])
            config["train"]["out_dir"] = "<temporary folder>"  # nothing is written there (log=False)
            arms[arm] = {
                **summaries[arm],
                "overrides": arm_overrides(args, arm, "<temporary folder>"),
                "config": config,
                "metrics": metrics,
            }
    report = {
        "benchmark": "mamo-vs-contrastive",
        "environment": {
            "device": device_string(device),
            "torch": torch.__version__,
            "maskmm": maskmm.__version__,
            "python": platform.python_version(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python", "benchmarks/mamo_vs_contrastive.py", *(argv or sys.argv[1:])]),
        },
        "settings": {
            "config": args.config,
            "seconds": args.seconds,
            "schedule_steps": cfgs["mamo"].train.steps,
            "finegrained_samples": args.finegrained_samples,
            "candidates": cfgs["mamo"].eval.num_candidates,
            "splits": cfgs["mamo"].eval.splits,
            "overrides": args.overrides,
            "mamo_overrides": args.mamo_overrides,
            "contrastive_overrides": [*CONTRASTIVE_ONLY, *args.contrastive_overrides],
        },
        "arms": arms,
    }
    json_path, md_path, table = write_results(report, Path(args.out))
    print(table)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
