"""Throughput, peak memory and loss curve of MAMO pretraining on one GPU (default: the ``base`` preset,
ViT-B/16 at 224 px + BERT-base 6+6 layers, on the built-in shapes data, bf16 autocast).

Runs ``--steps`` optimiser steps of the real training step (:meth:`Trainer.train_step`: every enabled
loss, optimiser, schedule, EMA teacher update) on data from the built-in stream, and writes
``mamo-<preset>-train-<device>.json`` (environment, full config, per-step seconds, samples/s over the
steps after ``--warmup``, peak allocated / reserved memory, the logged losses every ``--log-every``
steps), a Markdown summary and ``mamo-<preset>-train-<device>.png`` (loss curves) into ``--out``.

Run (GPU)::

    python benchmarks/mamo_train_gpu.py --steps 300 --batch-size 64
    python benchmarks/mamo_train_gpu.py --steps 300 --batch-size 64 --set train.compile=true

CPU smoke run (tiny preset, numbers meaningless)::

    python benchmarks/mamo_train_gpu.py --config tiny --allow-cpu --steps 6 --warmup 2 --batch-size 8

Timing: ``torch.cuda.synchronize()`` before reading the clock at every step, so each step's time
includes its data loading (``train.num_workers`` workers) and all its kernels. Samples/s is the batch
size times the number of timed steps over their summed time.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import maskmm
from maskmm.training import Trainer, get_recipe, plot_rows, to_python
from maskmm.training.cli import add_override_option
from maskmm.training.config import config_to_dict

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attention_gpu import device_slug
from mamo_vs_contrastive import device_string

__all__ = ["main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Training throughput, peak memory and loss curve of a recipe.")
    p.add_argument(
        "--recipe", default="mamo", help="mamo, maskvlm, semmim, albef, clip or package.module:attr"
    )
    p.add_argument("--config", default="base", help="preset name or YAML path (default: base)")
    p.add_argument("--steps", type=int, default=300, help="optimiser steps to run")
    p.add_argument("--warmup", type=int, default=20, help="first steps left out of the throughput")
    p.add_argument("--batch-size", type=int, default=64, help="train.batch_size (ALBEF: 64 per GPU)")
    p.add_argument("--log-every", type=int, default=10, help="record the losses every N steps")
    add_override_option(p)
    p.add_argument("--out", default="benchmarks/results", help="folder of the results")
    p.add_argument("--allow-cpu", action="store_true", help="run without a GPU (smoke test only)")
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "log_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.warmup < args.steps:
        p.error(f"--warmup must lie in [0, --steps), got {args.warmup} with --steps {args.steps}")
    return args


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train ``args.steps`` steps and return the result record (also written to ``args.out``)."""
    if not torch.cuda.is_available() and not args.allow_cpu:
        raise SystemExit("no CUDA device: this benchmark is for a GPU (pass --allow-cpu for a smoke run)")
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            f"train.batch_size={args.batch_size}",
            f"train.steps={args.steps}",
            "train.eval_every=0",
            "train.save_every=0",
            f"train.out_dir={tmp}",
            *args.overrides,
        ]
        recipe = get_recipe(args.recipe)
        cfg = recipe.load_config(args.config, overrides)
        trainer = Trainer(recipe, cfg, log=False)
        device = trainer.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds: list[float] = []
        history: list[dict[str, Any]] = []
        try:
            _sync(device)
            for _ in range(args.steps):
                t0 = time.perf_counter()
                stats = trainer.train_step(trainer.next_batch())
                _sync(device)
                seconds.append(time.perf_counter() - t0)
                if trainer.step % args.log_every == 0 or trainer.step == args.steps:
                    history.append({"step": trainer.step, **to_python(stats)})
        finally:
            trainer.close()
    timed = seconds[args.warmup :]
    mem = {}
    if device.type == "cuda":
        mem = {
            "peak_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30,
            "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30,
        }
    result = {
        "benchmark": f"{args.recipe}-train",
        "environment": {
            "device": device_string(device),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "maskmm": getattr(maskmm, "__version__", "unknown"),
            "python": platform.python_version(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        },
        "config": config_to_dict(cfg),
        "amp_dtype": str(trainer.amp_dtype),
        "steps": args.steps,
        "warmup_steps": args.warmup,
        "batch_size": args.batch_size,
        "samples_per_second": args.batch_size * len(timed) / sum(timed),
        "step_seconds_median": statistics.median(timed),
        "step_seconds": seconds,
        **mem,
        "history": history,
    }
    return result


def _markdown(r: dict[str, Any]) -> str:
    env = r["environment"]
    last = r["history"][-1] if r["history"] else {}
    losses = ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k.startswith("loss"))
    lines = [
        f"# MAMO `{r['config']['name']}` training on {env['device']}",
        "",
        f"torch {env['torch']} (CUDA {env['cuda']}), maskmm {env['maskmm']}, {env['date']}; "
        f"`{env['command']}`; autocast {r['amp_dtype']}.",
        "",
        "| steps | batch | samples/s | median step (s) | peak allocated (GiB) | peak reserved (GiB) |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {r['steps']} ({r['warmup_steps']} warm-up) | {r['batch_size']} | {r['samples_per_second']:.1f} "
        f"| {r['step_seconds_median']:.3f} | {r.get('peak_allocated_gib', float('nan')):.2f} "
        f"| {r.get('peak_reserved_gib', float('nan')):.2f} |",
        "",
        f"Losses at step {last.get('step', '-')}: {losses}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    preset, device = result["config"]["name"], result["environment"]["device"]
    stem = f"{device_slug(args.recipe)}-{device_slug(preset)}-train-{device_slug(device)}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = _markdown(result)
    (out / f"{stem}.md").write_text(md)
    plot_rows(result["history"], out / f"{stem}.png")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
