"""Distributed data parallel helpers (``torchrun`` environment, gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import random
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn

from maskmm.distributed.gather import _active, world_info

__all__ = [
    "DistInfo",
    "barrier",
    "cleanup_distributed",
    "init_distributed",
    "maybe_no_sync",
    "reduce_mean",
    "seed_everything",
    "select_device",
    "unwrap",
]


class DistInfo(tuple):
    """``(rank, world_size, local_rank)``."""

    __slots__ = ()

    def __new__(cls, rank: int, world_size: int, local_rank: int) -> DistInfo:
        return super().__new__(cls, (rank, world_size, local_rank))

    rank = property(lambda self: self[0])
    world_size = property(lambda self: self[1])
    local_rank = property(lambda self: self[2])


def select_device(name: str = "auto", local_rank: int = 0, *, field: str = "device") -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else CPU.

    A device that this machine does not have (CUDA without a GPU, ``cuda:3`` on a 2-GPU machine)
    raises a ``ValueError`` naming ``field`` before any work is done.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"{field} = {name!r} is not a device name: {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{field} = {name!r} but CUDA is not available on this machine; use 'cpu'")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        if dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"{field} = {name!r} resolves to {dev} but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type != "cpu" and not getattr(torch, dev.type).is_available():
        raise ValueError(f"{field} = {name!r} but {dev.type} is not available on this machine")
    return dev


def init_distributed(backend: str | None = None, timeout: float | None = None) -> DistInfo:
    """Initialise the default process group from ``torchrun``'s environment variables.

    Does nothing (returns ``(0, 1, 0)``) when ``WORLD_SIZE`` is unset or 1. The backend
    defaults to nccl with CUDA, gloo otherwise; with CUDA the local device is selected.
    ``timeout`` (seconds; ``None``: the backend's default) bounds every collective, so a rank
    that froze makes the others fail with an error instead of waiting forever.
    """
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(0, 1, 0)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        kwargs = {"timeout": datetime.timedelta(seconds=timeout)} if timeout is not None else {}
        dist.init_process_group(backend=backend, **kwargs)
    return DistInfo(rank, world, local_rank)


def cleanup_distributed() -> None:
    """Destroy the default process group if one was initialised (a single-rank one too)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Synchronise all ranks (no-op without a multi-rank process group)."""
    if _active():
        dist.barrier()


def reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ranks (identity without a process group). Returns a new tensor."""
    y = x.detach().clone()
    if not _active():
        return y
    dist.all_reduce(y)
    return y / world_info()[1]


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed Python, NumPy and torch with ``seed + rank``; return the value used."""
    value = int(seed) + int(rank)
    random.seed(value)
    try:
        import numpy as np

        np.random.seed(value % 2**32)
    except ImportError:  # pragma: no cover
        pass
    torch.manual_seed(value)
    return value


def unwrap(model: nn.Module) -> nn.Module:
    """Strip ``DistributedDataParallel`` (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


@contextlib.contextmanager
def maybe_no_sync(model: nn.Module, skip_sync: bool) -> Iterator[None]:
    """Inside gradient accumulation, skip DDP's all-reduce on all but the last micro-batch."""
    if skip_sync and isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    else:
        yield
