"""The one pretraining loop of every recipe (single process, or DDP under ``torchrun``).

The trainer knows a method only through its :class:`~maskmm.training.Recipe` (config class and
builder) and the :class:`~maskmm.training.Objective` protocol of the module the builder returns.

Per step: forward (bf16 autocast on CUDA by default) over ``grad_accum`` micro-batches, backward,
gradient clipping, AdamW step, warm-up + cosine schedule step, THEN the objective's
``after_optimizer_step`` (EMA teacher updates).
Rank 0 logs JSON lines, shows a progress bar, saves atomic checkpoints and plots the curves.
A resumed run (``resume=...``) reproduces the uninterrupted run exactly on CPU: model, teacher,
queue, optimiser, schedule, RNG states and the data position are all restored.

Faults: a step with a non-finite loss or gradient norm is skipped (``train.max_nonfinite_steps`` in
a row stop the run); checkpoints carry an integrity record and resuming falls back to the newest
intact one; SIGTERM/SIGINT finish the step, save and exit with status 128 + signal; a run never
writes into another run's folder (``overwrite=True`` replaces it); a resumed run keeps its folder
and refuses settings it cannot honour. ``docs/reliability.md`` lists each fault and its test.

With ``train.max_seconds > 0`` the run stops after the step during which its training wall-clock
(data, forward, backward, optimiser and logging; not the periodic ``eval_every`` evaluations nor the
checkpoint saves) passed the budget; the schedule still runs over ``train.steps``, so set that to
about the number of steps the budget allows.

Run: ``maskmm-train --recipe mamo --config tiny --set train.steps=200`` or
``python -m maskmm.training.cli``; many GPUs: ``torchrun --nproc_per_node 8 -m maskmm.training.cli
--recipe mamo --config base``.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from maskmm.data import SKIP_REASONS, pop_skip_counts
from maskmm.data.seeding import seed_worker

from .amp import autocast, resolve_amp_dtype
from .checkpoint import (
    capture_rng_state,
    clean_stale_temporaries,
    latest_intact_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)
from .config import RunConfig, config_to_dict, dump_config
from .data import build_collate, build_tokenizer, build_train_dataset
from .ddp import barrier, cleanup_distributed, init_distributed, maybe_no_sync, seed_everything, select_device
from .grads import clip_grad_norm, split_microbatches
from .guard import NonFiniteError, NonFiniteGuard, first_non_finite
from .init_from import load_matching
from .logger import MetricsLogger, to_python
from .metrics_file import truncate_metrics
from .optim import build_adamw
from .plot import plot_metrics
from .progress import ProgressBar
from .recipe import Recipe, TokenizerIds, get_recipe
from .sampler import ResumableSampler
from .schedule import warmup_cosine_scheduler
from .signals import GracefulStop, TrainingInterrupted

__all__ = ["NonFiniteError", "TrainResult", "Trainer", "TrainingInterrupted", "train"]

_KEEP_CHECKPOINTS = 2

#: Files a run writes in its folder; a new run refuses a folder holding any of them.
RUN_FILES = ("config.yaml", "metrics.jsonl", "model.pt", "eval.json", "curves.png")
#: The run's copy of its tokenizer folder (see ``Trainer._keep_tokenizer``).
TOKENIZER_DIR = "tokenizer"

#: Config fields a resumed run may change (everything else must equal the checkpoint's config).
RESUMABLE_FIELDS = (
    "name",
    "optim.",
    "log.",
    "eval.",
    "train.steps",
    "train.max_seconds",
    "train.save_every",
    "train.log_every",
    "train.eval_every",
    "train.num_workers",
    "train.threads",
    "train.device",
    "train.out_dir",
    "train.compile",
    "train.max_nonfinite_steps",
    "train.dist_timeout",
)


@dataclass
class TrainResult:
    """What :func:`train` returns: final step, the logged rows and where things were written.

    ``seconds`` is the wall-clock of the whole :meth:`Trainer.fit` call; ``train_seconds`` leaves
    out the periodic evaluations and checkpoint saves (the clock ``train.max_seconds`` limits).
    ``stopped_early`` is ``True`` when ``train.max_seconds`` ended the run before its last step.
    """

    step: int
    history: list[dict[str, Any]] = field(default_factory=list)
    out_dir: Path | None = None
    checkpoint: Path | None = None
    seconds: float = 0.0
    train_seconds: float = 0.0
    stopped_early: bool = False


class Trainer:
    """Holds the model, optimiser, schedule, data stream and RNG of one run.

    Args:
        recipe: the method (a :class:`Recipe`, a built-in name or an import path).
        cfg: the run configuration (an instance of the recipe's config class; validated).
        device: overrides ``cfg.train.device``.
        log: write metrics/checkpoints/plots (rank 0 only in any case).
        resume: a checkpoint file, or a run folder (its newest intact ``step_N.pt``), to continue.
        overwrite: replace the run files (config, metrics, checkpoints, exports) already in
            ``train.out_dir``; without it a folder holding another run is refused.

    Everything that can be checked before the model is built is: the device, the run folder
    (a folder, writable, not another run's) and, with ``resume``, that a checkpoint is there.
    """

    def __init__(
        self,
        recipe: Recipe | str,
        cfg: RunConfig,
        *,
        device: str | torch.device | None = None,
        log: bool = True,
        resume: str | os.PathLike | None = None,
        overwrite: bool = False,
    ) -> None:
        self.recipe = get_recipe(recipe)
        if not isinstance(cfg, self.recipe.config):
            raise TypeError(
                f"cfg must be a {self.recipe.config.__name__} (recipe {self.recipe.name!r}), "
                f"got {type(cfg).__name__}"
            )
        cfg.validate()
        self.cfg = cfg
        self.dist = init_distributed(timeout=cfg.train.dist_timeout)
        self.rank, self.world = self.dist.rank, self.dist.world_size
        self.main = self.rank == 0
        self.device = select_device(
            str(device) if device is not None else cfg.train.device,
            self.dist.local_rank,
            field="device" if device is not None else "train.device",
        )
        self.out_dir = Path(cfg.train.out_dir)
        self.log_enabled = log
        self._written: list[Path] = []  # step checkpoints this run wrote (the only ones it prunes)
        resume_path = self._find_resume(resume) if resume is not None else None
        if log and self.main:
            self._prepare_out_dir(resume_path, overwrite)
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        seed_everything(cfg.train.seed)  # same initial weights (student AND teacher) on every rank
        self.tokenizer = build_tokenizer(cfg)
        self.model = self.recipe.build(cfg, TokenizerIds.of(self.tokenizer)).to(self.device)
        if cfg.train.init_from and resume is None:  # fine-tuning starts from another run's weights
            self._init_from(cfg.train.init_from)
        self.model.train()
        seed_everything(cfg.train.seed, self.rank)  # rank-dependent streams from here on (dropout)
        self.optimizer = build_adamw(
            self.model,
            lr=cfg.optim.lr,
            weight_decay=cfg.optim.weight_decay,
            betas=(cfg.optim.beta1, cfg.optim.beta2),
            eps=cfg.optim.eps,
        )
        self._params = [p for g in self.optimizer.param_groups for p in g["params"]]  # clipped each step
        self.scheduler = warmup_cosine_scheduler(
            self.optimizer, cfg.train.steps, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio
        )
        # Masking and ITM negatives are drawn for the global batch (each rank keeps its rows), so this
        # stream is the same on every rank; dropout uses the rank-dependent global RNG above.
        self.generator = torch.Generator(self.device).manual_seed(cfg.train.seed * 1_000_003)
        self.amp_dtype = resolve_amp_dtype(cfg.train.amp, self.device)
        self.step = 0
        self.net: nn.Module = self.model
        if cfg.train.compile:
            self.net = torch.compile(self.net)
        if self.world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.net,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False,  # teacher weights and queue are buffers, identical on all ranks
                # a loss that joins later leaves its parts without gradient until then
                find_unused_parameters=bool(getattr(self.model, "find_unused_parameters", False)),
            )
        # data: local batch = global batch / world
        if cfg.train.batch_size % self.world:
            raise ValueError(
                f"train.batch_size ({cfg.train.batch_size}) must be divisible by "
                f"the world size ({self.world})"
            )
        self.local_batch = cfg.train.batch_size // self.world
        self.dataset = build_train_dataset(cfg)
        # records dropped while reading the annotations, then those met while reading items
        self.skipped: Counter[str] = Counter(getattr(self.dataset, "skipped", {}))
        # an iterable dataset (data.kind: shards) is an endless stream that splits itself over ranks
        # and workers; its position comes from the batches consumed (observe) and is checkpointed
        self.streamed = isinstance(self.dataset, torch.utils.data.IterableDataset)
        self.sampler: ResumableSampler | None = None
        self.batches_per_epoch = 0
        if not self.streamed:
            # rank r's batch of a step = rows [r * b, (r + 1) * b) of the global batch one process draws
            self.sampler = ResumableSampler(
                len(self.dataset),
                seed=cfg.train.seed,
                rank=self.rank,
                world_size=self.world,
                block=self.local_batch,
            )
            self.batches_per_epoch = len(self.sampler) // self.local_batch
            if self.batches_per_epoch == 0:
                raise ValueError(f"data.train_size ({len(self.dataset)}) is smaller than one global batch")
        self.collate = build_collate(cfg, self.tokenizer)
        self._iter = None
        self.guard = NonFiniteGuard(cfg.train.max_nonfinite_steps, self.device)
        if resume_path is not None:
            self._resume_from(resume_path)
        self.logger = MetricsLogger(
            self.out_dir / "metrics.jsonl" if log else None,
            enabled=self.main and log,
            tensorboard=cfg.log.tensorboard,
            wandb_project=cfg.log.wandb_project if cfg.log.wandb else None,
            config=config_to_dict(cfg),
        )
        self.history: list[dict[str, Any]] = []
        self._eval_set: Any = None  # the in-training evaluation's test file, read once
        self._warned_no_eval = False

    # ------------------------------------------------------------------ data

    def _loader(self) -> DataLoader:
        if self.sampler is not None:
            epoch, offset = divmod(self.step, self.batches_per_epoch)
            self.sampler.set_epoch(epoch, start=offset * self.local_batch)
            if hasattr(self.dataset, "set_epoch"):  # per-epoch augmentation draws (real data)
                self.dataset.set_epoch(epoch)
        workers = self.cfg.train.num_workers
        return DataLoader(
            self.dataset,
            batch_size=self.local_batch,
            sampler=self.sampler,
            collate_fn=self.collate,
            num_workers=workers,
            worker_init_fn=seed_worker if workers > 0 else None,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if workers > 0 else None,
        )

    def next_batch(self) -> dict[str, torch.Tensor]:
        """The batch of the current step (the stream restarts at each epoch boundary)."""
        if self._iter is None or (not self.streamed and self.step % self.batches_per_epoch == 0):
            self._iter = iter(self._loader())
        batch = next(self._iter)
        self.skipped.update(pop_skip_counts(batch))  # bad records met while making it (CPU ints)
        if self.streamed:
            self.dataset.observe(batch)  # consumed: the stream position moves past it (and leaves batch)
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def skipped_totals(self) -> dict[str, int]:
        """Bad records skipped so far, by reason (summed over ranks under DDP: a collective)."""
        counts = {r: self.skipped.get(r, 0) for r in SKIP_REASONS}
        if self.world > 1:
            t = torch.tensor(list(counts.values()), dtype=torch.int64, device=self.device)
            torch.distributed.all_reduce(t)
            counts = dict(zip(counts, t.tolist()))
        return counts

    # ------------------------------------------------------------------ step

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One optimiser step (with accumulation); returns detached stats (no host sync)."""
        cfg = self.cfg
        micro = split_microbatches(batch, cfg.train.grad_accum)
        stats: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=self.device)
        for i, mb in enumerate(micro):
            with maybe_no_sync(self.net, i < len(micro) - 1):
                with autocast(self.device, self.amp_dtype):
                    out = self.net(mb, step=self.step, generator=self.generator)
                (out.loss / len(micro)).backward()
            total = total + out.loss.detach() / len(micro)
            for k, v in out.stats.items():
                stats[k] = stats.get(k, 0.0) + v / len(micro)
        stats["grad_norm"] = clip_grad_norm(self._params, cfg.optim.clip_grad)
        stats["loss"] = total
        self.guard.step(self.optimizer, total, stats["grad_norm"])  # no update on a non-finite step
        stats["nonfinite_steps"] = self.guard.total.clone()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.after_optimizer_step(self.step)  # EMA teachers: after the optimizer step
        self.step += 1
        return stats

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "rng": capture_rng_state({"masking": self.generator}),
            "config": config_to_dict(self.cfg),
            "recipe": self.recipe.name,
            "tokenizer": {"vocab_size": self.tokenizer.vocab_size},
            "guard": self.guard.state_dict(),
            "skipped": dict(self.skipped),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        if "guard" in state:
            self.guard.load_state_dict(state["guard"])
        if "skipped" in state:
            self.skipped = Counter({str(k): int(v) for k, v in state["skipped"].items()})
        if self.streamed and "data" in state:
            self.dataset.load_state_dict(state["data"])
        if self.world == 1:
            restore_rng_state(state["rng"], {"masking": self.generator})
        else:  # the shared masking stream (saved by rank 0) continues on every rank; the global
            # (dropout) RNG states are per rank and continue from their rank-dependent seeds
            restore_rng_state({"generators": state["rng"].get("generators", {})}, {"masking": self.generator})
        self._iter = None

    def save(self, name: str | None = None) -> Path | None:
        """Write ``step_<N>.pt`` (or ``name``) with its integrity record; keep this run's last two.

        Refuses (:class:`NonFiniteError`) to write non-finite parameters or optimiser state. A
        failed write raises :class:`~maskmm.training.CheckpointSaveError` naming the path and the
        OS reason; older checkpoints stay intact.
        """
        # every rank calls save(); a stream's position is gathered from all of them (a collective)
        stream = self.dataset.gather_state() if self.streamed else None
        if not (self.main and self.log_enabled):
            return None
        state = self.state_dict()
        if stream is not None:
            state["data"] = stream
        self._check_finite_state(state)
        path = save_checkpoint(state, self.out_dir / (name or f"step_{self.step}.pt"))
        if name is None:
            self._written.append(path)
            prune_checkpoints(self.out_dir, _KEEP_CHECKPOINTS, written_by=self._written)
            self._written = self._written[-_KEEP_CHECKPOINTS:]
        return path

    def _check_finite_state(self, state: dict[str, Any]) -> None:
        named = {f"model.{k}": v for k, v in state["model"].items()}
        for pid, slots in state["optimizer"]["state"].items():
            named.update({f"optimizer.state[{pid}].{k}": v for k, v in slots.items()})
        bad = first_non_finite(named)
        if bad is not None:
            raise NonFiniteError(f"refusing to write a checkpoint at step {self.step}: {bad} is not finite")

    # ------------------------------------------------------------------ run folder and resume

    def _find_resume(self, path: str | os.PathLike) -> Path:
        """The checkpoint to resume from: ``path`` itself, or a folder's newest intact ``step_N.pt``
        (bad newer files are skipped with a warning naming each)."""
        p = Path(path)
        if p.is_dir():
            found = latest_intact_checkpoint(p)
            if found is None:
                raise ValueError(f"resume: no intact step_<N>.pt checkpoint in {str(p)!r}")
            return found
        if not p.is_file():
            raise ValueError(f"resume: {str(p)!r} is neither a checkpoint file nor a run folder")
        return p

    def _init_from(self, path: str) -> None:
        """Load the weights of the run or checkpoint ``path`` whose names match (``train.init_from``)."""
        from .inference import resolve_checkpoint

        src = resolve_checkpoint(path)
        state = load_checkpoint(src, map_location="cpu")["model"]
        report = load_matching(self.model, state)
        if self.main:
            print(f"train.init_from: {src}: {report}", file=sys.stderr)

    def _prepare_out_dir(self, resume: Path | None, overwrite: bool) -> None:
        """``train.out_dir`` must be a writable folder that holds no other run (rank 0)."""
        out = self.out_dir
        if out.exists() and not out.is_dir():
            raise ValueError(f"train.out_dir = {str(out)!r} exists and is not a folder")
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / f".write-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise ValueError(f"train.out_dir = {str(out)!r} is not writable: {e.strerror or e}") from None
        clean_stale_temporaries(out)
        continuing = resume is not None and resume.resolve().parent == out.resolve()
        if continuing:
            return
        found = sorted(
            p.name for p in out.iterdir() if p.name in (*RUN_FILES, TOKENIZER_DIR) or _is_step_file(p)
        )
        if not found:
            return
        if not overwrite:
            raise ValueError(
                f"train.out_dir = {str(out)!r} already holds a run ({', '.join(found[:4])}"
                f"{', ...' if len(found) > 4 else ''}): resume it with --resume {out}, choose another "
                "--out-dir, or pass --overwrite to replace it"
            )
        shutil.rmtree(out / TOKENIZER_DIR, ignore_errors=True)
        for p in out.iterdir():
            if p.name in RUN_FILES or _is_step_file(p) or _is_step_file(p, suffix=".pt.sha256"):
                p.unlink()

    def _resume_from(self, path: Path) -> None:
        state = load_checkpoint(path, map_location=self.device)
        self._check_resume_config(state.get("config", {}), path)
        # the optimiser settings of this config apply from here on (the saved groups hold the old ones)
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.load_state_dict(state)
        for group, settings in zip(self.optimizer.param_groups, fresh):
            group.update(settings)
        self.scheduler.base_lrs = [g["initial_lr"] for g in self.optimizer.param_groups]
        sched = self.scheduler
        for group, base, fn in zip(self.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * fn(sched.last_epoch)
        if path.resolve().parent == self.out_dir.resolve():
            self._written = sorted(
                (p for p in self.out_dir.iterdir() if _is_step_file(p) and _step_of(p) <= self.step),
                key=_step_of,
            )
            if self.main and self.log_enabled:  # rows logged after the checkpoint are logged again
                truncate_metrics(self.out_dir / "metrics.jsonl", self.step)

    def _check_resume_config(self, saved: dict[str, Any], path: Path) -> None:
        """Every field that differs from the checkpoint's config must be one a resumed run honours."""
        now, before = _flatten(config_to_dict(self.cfg)), _flatten(saved)
        changed = [
            f"{k}: {before.get(k)!r} -> {now.get(k)!r}"
            for k in sorted(set(now) | set(before))
            if now.get(k) != before.get(k) and not k.startswith(RESUMABLE_FIELDS)
        ]
        if changed:
            raise ValueError(
                f"resume: these settings differ from the checkpoint {str(path)!r} and cannot change when "
                f"resuming (start a new run instead): {'; '.join(changed)}"
            )

    # ------------------------------------------------------------------ loop

    def fit(self, steps: int | None = None, *, progress: bool | None = None) -> TrainResult:
        """Train until ``steps`` (default ``cfg.train.steps``) optimiser steps are done.

        With ``train.max_seconds > 0``, stop earlier: after the step during which this call's
        training wall-clock (evaluations and checkpoint saves excluded) passed the budget. ``steps``
        may exceed ``train.steps``; the learning rate then stays at its final value.
        """
        cfg = self.cfg
        steps = cfg.train.steps if steps is None else steps
        if self.main and self.log_enabled:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, self.out_dir / "config.yaml")
            self._keep_tokenizer()
        show = cfg.log.progress if progress is None else progress
        bar = ProgressBar(steps, desc="train", initial=self.step, enabled=self.main and show)
        t0 = time.perf_counter()
        excluded = 0.0  # seconds spent in periodic evaluation and checkpoint saving
        stop = False
        last_ckpt, saved_at = None, -1
        signum = 0
        try:
            with GracefulStop() as stopper:
                while self.step < steps and not stop:
                    try:
                        batch = self.next_batch()
                        stats = self.train_step(batch)
                        stop = self._budget_spent(t0 + excluded)
                        signum = stopper.should_stop(self.device)
                    except RuntimeError as e:
                        if self.world > 1 and not isinstance(e, NonFiniteError):
                            raise RuntimeError(
                                f"rank {self.rank}: step {self.step + 1} failed; a collective may have "
                                f"timed out (train.dist_timeout = {cfg.train.dist_timeout:g} s), another "
                                f"rank being stuck or dead: {e}"
                            ) from e
                        raise
                    stop = stop or bool(signum)
                    logged = self._log_step(stats, steps, stop, bar)
                    saving = bool(cfg.train.save_every and self.step % cfg.train.save_every == 0)
                    if self.device.type != "cuda" or logged or saving or signum:
                        self.guard.check_limit(self.step)  # a host read: where it costs nothing
                    t_aside = time.perf_counter()
                    if saving or signum:
                        last_ckpt, saved_at = self.save(), self.step
                        barrier()
                    every = cfg.train.eval_every
                    if every and self.step % every == 0 and self.step < steps and not stop:
                        self.evaluate_now()
                    excluded += time.perf_counter() - t_aside
        finally:
            bar.close()
        if signum:
            raise TrainingInterrupted(signum, self.step, last_ckpt)
        self.guard.check_limit(self.step)
        train_seconds = time.perf_counter() - t0 - excluded
        if self.log_enabled:
            if saved_at != self.step:
                last_ckpt = self.save()
            if self.main:
                save_checkpoint(self._export_state(), self.out_dir / "model.pt")
                if cfg.log.plot:
                    plot_metrics(self.out_dir / "metrics.jsonl", self.out_dir / "curves.png")
        barrier()
        return TrainResult(
            self.step,
            self.history,
            self.out_dir,
            last_ckpt,
            time.perf_counter() - t0,
            train_seconds=train_seconds,
            stopped_early=stop and self.step < steps,
        )

    def _keep_tokenizer(self) -> None:
        """Copy the tokenizer folder (``data.tokenizer``) into the run folder as ``tokenizer/``, so that
        the run evaluates and loads from any directory, also after the original folder moved."""
        src = self.cfg.data.tokenizer
        dst = self.out_dir / TOKENIZER_DIR
        if not src or Path(src).resolve() == dst.resolve():
            return
        tmp = self.out_dir / f".{TOKENIZER_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        shutil.rmtree(dst, ignore_errors=True)
        os.replace(tmp, dst)

    def _log_step(self, stats: dict[str, torch.Tensor], steps: int, stop: bool, bar: ProgressBar) -> bool:
        """Log the step's stats on log steps (one host transfer); returns whether it logged."""
        logged = self.step % max(self.cfg.train.log_every, 1) == 0 or self.step == steps or stop
        if logged:
            row = {k: v for k, v in to_python(stats).items()}
            row["lr"] = self.optimizer.param_groups[0]["lr"]
            row.update({f"skipped/{r}": n for r, n in self.skipped_totals().items() if n})
            row["step"] = self.step
            self.history.append(row)
            self.logger.log({k: v for k, v in row.items() if k != "step"}, step=self.step)
            bar.set_postfix({k: row[k] for k in ("loss", "loss_itc", "loss_itm") if k in row})
        bar.update()
        return logged

    def _budget_spent(self, start: float) -> bool:
        """Whether the training clock started at ``start`` (a ``time.perf_counter()`` value, moved
        forward by the excluded time) passed ``train.max_seconds``; never when that is 0.

        On CUDA the device is synchronised first, so that the clock covers the step's kernels; under
        DDP rank 0's decision is broadcast, so that every rank stops after the same step.
        """
        budget = self.cfg.train.max_seconds
        if budget <= 0:
            return False
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        spent = time.perf_counter() - start > budget
        if self.world > 1:
            flag = torch.tensor([1.0 if spent else 0.0], device=self.device)
            torch.distributed.broadcast(flag, src=0)
            spent = bool(flag.item())
        return spent

    def _export_state(self) -> dict[str, Any]:
        """Weights, recipe and config only (what :mod:`maskmm.training.inference` needs)."""
        return {
            "model": self.model.state_dict(),
            "config": config_to_dict(self.cfg),
            "recipe": self.recipe.name,
            "step": self.step,
        }

    def evaluate_now(self) -> dict[str, float] | None:
        """Quick ITC retrieval (rank 0), logged under ``eval/``: on the first of ``eval.test_files``
        when the run has test files, else on the first built-in ``eval.splits`` (500 candidates) when
        it trains on the built-in data; a run on other data without test files is not evaluated
        (scoring the built-in data would say nothing about it; a warning says so once)."""
        from maskmm.evaluation.files import load_retrieval_file
        from maskmm.evaluation.run import evaluate_retrieval

        cfg = self.cfg
        result = None
        if self.main:
            data = None
            if cfg.eval.test_files:
                if self._eval_set is None:
                    self._eval_set = load_retrieval_file(
                        cfg.eval.test_files[0],
                        cfg.eval.image_root or cfg.data.image_root,
                        image_size=cfg.data.image_size,
                        normalize=cfg.data.normalize,
                    )
                data = self._eval_set
            elif cfg.data.kind != "shapes":
                if not self._warned_no_eval:
                    warnings.warn(
                        f"train.eval_every is set but data.kind={cfg.data.kind!r} has no eval.test_files: "
                        "no in-training evaluation",
                        stacklevel=2,
                    )
                    self._warned_no_eval = True
                barrier()
                return None
            self.model.eval()
            split = cfg.eval.splits[0] if cfg.eval.splits else "val"
            with autocast(self.device, self.amp_dtype):
                result = evaluate_retrieval(
                    self.model,
                    self.tokenizer,
                    cfg,
                    split,
                    n=min(cfg.eval.num_candidates, 500),
                    itm=False,
                    data=data,
                )
            self.logger.log({f"eval/{k}": v for k, v in result.items()}, step=self.step)
            self.history.append({"step": self.step, **{f"eval/{k}": v for k, v in result.items()}})
            self.model.train()
        barrier()
        return result

    def close(self) -> None:
        self.logger.close()


def _is_step_file(p: Path, suffix: str = ".pt") -> bool:
    stem = p.name[: -len(suffix)] if p.name.endswith(suffix) else ""
    return stem.startswith("step_") and stem[5:].isdigit()


def _step_of(p: Path) -> int:
    return int(p.name[5:-3])


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def train(
    recipe: Recipe | str,
    cfg: RunConfig,
    *,
    resume: str | os.PathLike | None = None,
    steps: int | None = None,
    device: str | None = None,
    log: bool = True,
    progress: bool | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Build a :class:`Trainer` (resuming if asked), train, and return the result."""
    trainer = Trainer(recipe, cfg, device=device, log=log, resume=resume, overwrite=overwrite)
    try:
        return trainer.fit(steps, progress=progress)
    finally:
        trainer.close()
        cleanup_distributed()
