"""MAMO pretraining loop (single process, or DDP under ``torchrun``).

Per step: forward (bf16 autocast on CUDA by default) over ``grad_accum`` micro-batches, backward,
gradient clipping, AdamW step, warm-up + cosine schedule step, THEN the EMA teacher update.
Rank 0 logs JSON lines, shows a progress bar, saves atomic checkpoints and plots the curves.
A resumed run (``resume=...``) reproduces the uninterrupted run exactly on CPU: model, teacher,
queue, optimiser, schedule, RNG states and the data position are all restored.

With ``train.max_seconds > 0`` the run stops after the step during which its training wall-clock
(data, forward, backward, optimiser and logging; not the periodic ``eval_every`` evaluations nor the
checkpoint saves) passed the budget; the schedule still runs over ``train.steps``, so set that to
about the number of steps the budget allows.

Run: ``maskmm-train --config tiny --set train.steps=200`` or ``python -m maskmm.models.mamo.train``;
many GPUs: ``torchrun --nproc_per_node 8 -m maskmm.models.mamo.train --config base``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from maskmm.data.seeding import seed_worker
from maskmm.training import (
    MetricsLogger,
    ProgressBar,
    ResumableSampler,
    autocast,
    barrier,
    build_adamw,
    capture_rng_state,
    cleanup_distributed,
    clip_grad_norm,
    init_distributed,
    latest_checkpoint,
    linear_ramp,
    load_checkpoint,
    maybe_no_sync,
    plot_metrics,
    resolve_amp_dtype,
    restore_rng_state,
    save_checkpoint,
    seed_everything,
    select_device,
    split_microbatches,
    to_python,
    warmup_cosine_scheduler,
)

from .builder import build_model
from .config import MAMOConfig, config_to_dict, dump_config
from .data import build_collate, build_tokenizer, build_train_dataset

__all__ = ["TrainResult", "Trainer", "train"]

_KEEP_CHECKPOINTS = 2


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
        cfg: the run configuration (validated).
        device: overrides ``cfg.train.device``.
        log: write metrics/checkpoints/plots (rank 0 only in any case).
    """

    def __init__(
        self, cfg: MAMOConfig, *, device: str | torch.device | None = None, log: bool = True
    ) -> None:
        cfg.validate()
        self.cfg = cfg
        self.dist = init_distributed()
        self.rank, self.world = self.dist.rank, self.dist.world_size
        self.main = self.rank == 0
        self.device = select_device(
            str(device) if device is not None else cfg.train.device, self.dist.local_rank
        )
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        seed_everything(cfg.train.seed)  # same initial weights (student AND teacher) on every rank
        self.tokenizer = build_tokenizer(cfg)
        self.model = build_model(
            cfg,
            vocab_size=self.tokenizer.vocab_size,
            pad_id=self.tokenizer.pad_id,
            mask_token_id=self.tokenizer.mask_id,
            special_ids=tuple(self.tokenizer.special_ids),
        ).to(self.device)
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
                find_unused_parameters=cfg.losses.itm_start_step > 0 or cfg.losses.masked_start_step > 0,
            )
        # data: local batch = global batch / world
        if cfg.train.batch_size % self.world:
            raise ValueError(
                f"train.batch_size ({cfg.train.batch_size}) must be divisible by "
                f"the world size ({self.world})"
            )
        self.local_batch = cfg.train.batch_size // self.world
        self.dataset = build_train_dataset(cfg)
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
        self.out_dir = Path(cfg.train.out_dir)
        self.logger = MetricsLogger(
            self.out_dir / "metrics.jsonl" if log else None,
            enabled=self.main and log,
            tensorboard=cfg.log.tensorboard,
            wandb_project=cfg.log.wandb_project if cfg.log.wandb else None,
            config=config_to_dict(cfg),
        )
        self.log_enabled = log
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ data

    def _loader(self) -> DataLoader:
        epoch, offset = divmod(self.step, self.batches_per_epoch)
        self.sampler.set_epoch(epoch, start=offset * self.local_batch)
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
        if self._iter is None or self.step % self.batches_per_epoch == 0:
            self._iter = iter(self._loader())
        batch = next(self._iter)
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    # ------------------------------------------------------------------ step

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One optimiser step (with accumulation); returns detached stats (no host sync)."""
        cfg = self.cfg
        alpha = linear_ramp(self.step, cfg.itc.alpha_warmup_steps, cfg.itc.alpha)
        hardness = cfg.itm.hardness_at(self.step - cfg.losses.itm_start_step)
        active = cfg.losses.active_at(self.step)
        micro = split_microbatches(batch, cfg.train.grad_accum)
        stats: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=self.device)
        for i, mb in enumerate(micro):
            with maybe_no_sync(self.net, i < len(micro) - 1):
                with autocast(self.device, self.amp_dtype):
                    out = self.net(
                        mb["images"],
                        mb["input_ids"],
                        mb["text_valid"],
                        mb["image_ids"],
                        alpha=alpha,
                        itm_hardness=hardness,
                        active_losses=active,
                        generator=self.generator,
                    )
                (out.loss / len(micro)).backward()
            total = total + out.loss.detach() / len(micro)
            for k, v in out.stats.items():
                stats[k] = stats.get(k, 0.0) + v / len(micro)
        stats["grad_norm"] = clip_grad_norm(self._params, cfg.optim.clip_grad)
        stats["loss"] = total
        if "itm" in active:
            stats["itm/hardness"] = torch.tensor(hardness)  # a CPU scalar: no device work
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.update_teacher(self.step)  # after the optimizer step
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
            "tokenizer": {"vocab_size": self.tokenizer.vocab_size},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        if self.world == 1:
            restore_rng_state(state["rng"], {"masking": self.generator})
        else:  # the shared masking stream (saved by rank 0) continues on every rank; the global
            # (dropout) RNG states are per rank and continue from their rank-dependent seeds
            restore_rng_state({"generators": state["rng"].get("generators", {})}, {"masking": self.generator})
        self._iter = None

    def save(self, name: str | None = None) -> Path | None:
        if not (self.main and self.log_enabled):
            return None
        path = save_checkpoint(self.state_dict(), self.out_dir / (name or f"step_{self.step}.pt"))
        if name is None:
            old = sorted(self.out_dir.glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
            for p in old[:-_KEEP_CHECKPOINTS]:
                p.unlink(missing_ok=True)
        return path

    def resume(self, path: str | os.PathLike) -> None:
        """Load a checkpoint file, or the newest ``step_N.pt`` of a folder."""
        p = Path(path)
        if p.is_dir():
            found = latest_checkpoint(p)
            if found is None:
                raise ValueError(f"no step_<N>.pt checkpoint in {str(p)!r}")
            p = found
        self.load_state_dict(load_checkpoint(p, map_location=self.device))

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
        show = cfg.log.progress if progress is None else progress
        bar = ProgressBar(steps, desc="train", initial=self.step, enabled=self.main and show)
        t0 = time.perf_counter()
        excluded = 0.0  # seconds spent in periodic evaluation and checkpoint saving
        stop = False
        last_ckpt, saved_at = None, -1
        try:
            while self.step < steps and not stop:
                batch = self.next_batch()
                stats = self.train_step(batch)
                stop = self._budget_spent(t0 + excluded)
                if self.step % max(cfg.train.log_every, 1) == 0 or self.step == steps or stop:
                    row = {k: v for k, v in to_python(stats).items()}
                    row["lr"] = self.optimizer.param_groups[0]["lr"]
                    row["step"] = self.step
                    self.history.append(row)
                    self.logger.log({k: v for k, v in row.items() if k != "step"}, step=self.step)
                    bar.set_postfix({k: row[k] for k in ("loss", "loss_itc", "loss_itm") if k in row})
                bar.update()
                t_aside = time.perf_counter()
                if cfg.train.save_every and self.step % cfg.train.save_every == 0:
                    last_ckpt, saved_at = self.save(), self.step
                    barrier()
                every = cfg.train.eval_every
                if every and self.step % every == 0 and self.step < steps and not stop:
                    self.evaluate_now()
                excluded += time.perf_counter() - t_aside
        finally:
            bar.close()
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
        """Weights + config only (what :mod:`~maskmm.models.mamo.inference` needs)."""
        return {"model": self.model.state_dict(), "config": config_to_dict(self.cfg), "step": self.step}

    def evaluate_now(self) -> dict[str, float] | None:
        """Quick retrieval on the first eval split (rank 0); logged under ``eval/``."""
        from .eval import evaluate_retrieval

        result = None
        if self.main:
            self.model.eval()
            split = self.cfg.eval.splits[0] if self.cfg.eval.splits else "val"
            with autocast(self.device, self.amp_dtype):
                result = evaluate_retrieval(
                    self.model,
                    self.tokenizer,
                    self.cfg,
                    split,
                    n=min(self.cfg.eval.num_candidates, 500),
                    itm=False,
                )
            self.logger.log({f"eval/{k}": v for k, v in result.items()}, step=self.step)
            self.history.append({"step": self.step, **{f"eval/{k}": v for k, v in result.items()}})
            self.model.train()
        barrier()
        return result

    def close(self) -> None:
        self.logger.close()


def train(
    cfg: MAMOConfig,
    *,
    resume: str | os.PathLike | None = None,
    steps: int | None = None,
    device: str | None = None,
    log: bool = True,
    progress: bool | None = None,
) -> TrainResult:
    """Build a :class:`Trainer`, optionally resume, train, and return the result."""
    trainer = Trainer(cfg, device=device, log=log)
    try:
        if resume:
            trainer.resume(resume)
        return trainer.fit(steps, progress=progress)
    finally:
        trainer.close()
        cleanup_distributed()


def main(argv: list[str] | None = None) -> int:
    from .cli import train_main

    return train_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
