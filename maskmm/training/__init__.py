"""Generic training utilities: optimiser groups, schedules, checkpoints, logging, DDP helpers.

Nothing here knows about a particular model; ``maskmm.models.mamo.train`` assembles them.
"""

from __future__ import annotations

from .amp import autocast, resolve_amp_dtype
from .checkpoint import (
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .ddp import (
    DistInfo,
    barrier,
    cleanup_distributed,
    init_distributed,
    maybe_no_sync,
    reduce_mean,
    seed_everything,
    select_device,
    unwrap,
)
from .grads import clip_grad_norm, split_microbatches
from .logger import MetricsLogger, read_metrics, to_python
from .optim import DEFAULT_NO_DECAY, build_adamw, param_groups
from .plot import plot_metrics, plot_rows, select_plot_keys
from .progress import ProgressBar
from .sampler import ResumableSampler
from .schedule import linear_ramp, warmup_cosine, warmup_cosine_scheduler

__all__ = [
    "DEFAULT_NO_DECAY",
    "DistInfo",
    "MetricsLogger",
    "ProgressBar",
    "ResumableSampler",
    "autocast",
    "barrier",
    "build_adamw",
    "capture_rng_state",
    "cleanup_distributed",
    "clip_grad_norm",
    "init_distributed",
    "latest_checkpoint",
    "linear_ramp",
    "load_checkpoint",
    "maybe_no_sync",
    "param_groups",
    "plot_metrics",
    "plot_rows",
    "read_metrics",
    "reduce_mean",
    "resolve_amp_dtype",
    "restore_rng_state",
    "save_checkpoint",
    "seed_everything",
    "select_device",
    "select_plot_keys",
    "split_microbatches",
    "to_python",
    "unwrap",
    "warmup_cosine",
    "warmup_cosine_scheduler",
]
