"""Generic training utilities: optimiser groups, schedules, checkpoints, logging, DDP helpers.

The one trainer (:class:`Trainer`), config system (:mod:`.config`), recipe protocol and registry
(:mod:`.recipe`), inference API and command line of every recipe; nothing here imports a recipe.
"""

from __future__ import annotations

from .amp import autocast, resolve_amp_dtype
from .checkpoint import (
    CheckpointError,
    CheckpointIntegrityWarning,
    CheckpointSaveError,
    capture_rng_state,
    checkpoint_record_path,
    clean_stale_temporaries,
    latest_checkpoint,
    latest_intact_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
    verify_checkpoint,
)
from .config import (
    DataConfig,
    LogConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    config_to_dict,
    dump_config,
    load_config,
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
from .guard import NonFiniteError, NonFiniteGuard, first_non_finite
from .inference import Encoded, Inference, load_run
from .logger import MetricsLogger, read_metrics, to_python
from .metrics_file import truncate_metrics
from .optim import DEFAULT_NO_DECAY, build_adamw, param_groups
from .plot import plot_metrics, plot_rows, select_plot_keys
from .progress import ProgressBar
from .recipe import BUILTIN_RECIPES, Objective, Recipe, StepOutput, TokenizerIds, get_recipe
from .sampler import ResumableSampler
from .schedule import linear_ramp, warmup_cosine, warmup_cosine_scheduler
from .signals import GracefulStop, TrainingInterrupted
from .trainer import Trainer, TrainResult, train

__all__ = [
    "BUILTIN_RECIPES",
    "DEFAULT_NO_DECAY",
    "CheckpointError",
    "CheckpointIntegrityWarning",
    "CheckpointSaveError",
    "DataConfig",
    "DistInfo",
    "Encoded",
    "GracefulStop",
    "Inference",
    "LogConfig",
    "MetricsLogger",
    "NonFiniteError",
    "NonFiniteGuard",
    "Objective",
    "OptimConfig",
    "ProgressBar",
    "Recipe",
    "ResumableSampler",
    "RunConfig",
    "StepOutput",
    "TokenizerIds",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingInterrupted",
    "autocast",
    "barrier",
    "build_adamw",
    "capture_rng_state",
    "checkpoint_record_path",
    "clean_stale_temporaries",
    "cleanup_distributed",
    "clip_grad_norm",
    "config_to_dict",
    "dump_config",
    "first_non_finite",
    "get_recipe",
    "init_distributed",
    "latest_checkpoint",
    "latest_intact_checkpoint",
    "linear_ramp",
    "load_checkpoint",
    "load_config",
    "load_run",
    "maybe_no_sync",
    "param_groups",
    "plot_metrics",
    "plot_rows",
    "prune_checkpoints",
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
    "train",
    "truncate_metrics",
    "unwrap",
    "verify_checkpoint",
    "warmup_cosine",
    "warmup_cosine_scheduler",
]
