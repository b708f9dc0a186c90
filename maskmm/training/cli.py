"""Command-line entry points ``maskmm-train`` and ``maskmm-eval``, for every recipe.

``maskmm-train --recipe NAME --config PRESET_OR_YAML [--set section.field=value ...]``, where NAME is a
built-in recipe (``mamo``, ``maskvlm``, ``semmim``, ``albef``, ``clip``) or ``package.module:attr``
naming a user's :class:`~maskmm.training.Recipe`. ``maskmm-eval --checkpoint RUN`` finds the recipe
in the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_override_option", "eval_main", "train_main"]


def add_override_option(
    p: argparse.ArgumentParser, flag: str = "--set", dest: str = "overrides", help: str = ""
) -> None:
    """Add a repeatable ``flag SECTION.FIELD=VALUE`` option collecting config overrides in ``dest``."""
    p.add_argument(
        flag,
        dest=dest,
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help=help or "override a config field (repeatable)",
    )


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--recipe",
        default="mamo",
        help="built-in recipe (mamo, maskvlm, semmim, albef, clip) or package.module:attr (default: mamo)",
    )
    p.add_argument("--config", default="tiny", help="preset name (tiny, base) or path to a YAML file")
    add_override_option(
        p, help="override any config field, e.g. --set train.steps=200 --set losses.mrm=false (repeatable)"
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: train.device)")


def train_main(argv: list[str] | None = None) -> int:
    """Train: ``maskmm-train --recipe mamo --config tiny --set train.steps=300 --out-dir runs/x``."""
    p = argparse.ArgumentParser(
        prog="maskmm-train", description="Pretrain a recipe (MAMO by default) on the configured data."
    )
    _common(p)
    p.add_argument(
        "--out-dir", default=None, help="run folder (default: train.out_dir; with --resume: its folder)"
    )
    p.add_argument("--resume", default=None, help="checkpoint file or run folder to continue from")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the run already in the run folder (default: refuse)"
    )
    p.add_argument("--eval", action="store_true", help="run the full evaluation after training")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    overrides = list(args.overrides)
    out_dir = args.out_dir
    if out_dir is None and args.resume:  # a resumed run goes on writing where it was
        resume = Path(args.resume)
        out_dir = str(resume if resume.is_dir() else resume.parent)
    if out_dir:
        overrides.append(f"train.out_dir={out_dir}")
    from .recipe import get_recipe

    try:
        recipe = get_recipe(args.recipe)
        cfg = recipe.load_config(args.config, overrides)
    except (ValueError, TypeError) as e:
        p.error(str(e))
    from .checkpoint import CheckpointError, CheckpointSaveError
    from .ddp import cleanup_distributed
    from .guard import NonFiniteError
    from .signals import TrainingInterrupted
    from .trainer import Trainer

    try:
        trainer = Trainer(recipe, cfg, device=args.device, resume=args.resume, overwrite=args.overwrite)
    except (ValueError, TypeError) as e:  # settings and files checked before any training work
        cleanup_distributed()
        p.error(str(e))
    try:
        result = trainer.fit(progress=not args.quiet and cfg.log.progress)
        skipped = {r: n for r, n in trainer.skipped_totals().items() if n}
        if trainer.main:
            if skipped:
                print(f"skipped bad records: {skipped}", file=sys.stderr)
            last = next((r for r in reversed(result.history) if "loss" in r), {})
            print(
                f"done: {result.step} steps in {result.seconds:.0f} s, "
                f"last loss {last.get('loss', float('nan')):.4f}; "
                f"checkpoint {result.checkpoint}",
                file=sys.stderr,
            )
        if args.eval and trainer.main:
            from maskmm.evaluation.run import evaluate, format_table

            res = evaluate(trainer.model, trainer.tokenizer, cfg)
            print(format_table(res))
            (Path(cfg.train.out_dir) / "eval.json").write_text(json.dumps(res, indent=2))
    except TrainingInterrupted as e:
        print(f"maskmm-train: {e}; continue with --resume {cfg.train.out_dir}", file=sys.stderr)
        return e.exit_code
    except (NonFiniteError, CheckpointError, CheckpointSaveError) as e:
        print(f"maskmm-train: error: {e}", file=sys.stderr)
        return 1
    finally:
        trainer.close()
        cleanup_distributed()
    return 0


def eval_main(argv: list[str] | None = None) -> int:
    """Evaluate a checkpoint: ``maskmm-eval --checkpoint runs/mamo-tiny [--splits val heldout]`` or, on
    the user's test sets, ``maskmm-eval --checkpoint RUN --test-file coco_test.json --image-root DIR``."""
    p = argparse.ArgumentParser(prog="maskmm-eval", description="Evaluate a trained checkpoint (any recipe).")
    p.add_argument("--checkpoint", required=True, help="run folder, model.pt or step_N.pt")
    add_override_option(p, help="override evaluation fields, e.g. --set eval.num_candidates=500")
    p.add_argument(
        "--splits",
        nargs="+",
        default=None,
        choices=["train", "val", "heldout"],
        help="built-in splits (default: the run's eval.splits when it trained on the built-in data)",
    )
    p.add_argument(
        "--test-file",
        action="append",
        default=None,
        help="ALBEF-format retrieval file [{image, caption: [...]}] (repeatable; replaces eval.test_files)",
    )
    p.add_argument(
        "--finegrained-file",
        action="append",
        default=None,
        help="distractor file [{image, caption, distractors: {attribute: [...]}}] (repeatable)",
    )
    p.add_argument("--image-root", default=None, help="folder the files' image paths are relative to")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    from maskmm.evaluation.run import evaluate, format_table

    from .inference import load_run

    try:
        bad = [o for o in args.overrides if not o.strip().startswith("eval.")]
        if bad:
            raise ValueError(f"maskmm-eval only overrides eval.* fields, got {bad}")
        overrides = list(args.overrides)
        if args.image_root is not None:
            overrides.append(f"eval.image_root={args.image_root}")
        _, cfg, model, tokenizer = load_run(args.checkpoint, device=args.device, overrides=overrides)
        res = evaluate(
            model.eval(),
            tokenizer,
            cfg,
            args.splits,
            test_files=args.test_file,
            finegrained_files=args.finegrained_file,
        )
    except (ValueError, TypeError) as e:
        p.error(str(e))
    print(format_table(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(train_main())
