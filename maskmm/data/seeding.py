"""Seeding for data loading, single process or DDP.

Two mechanisms, pick one per pipeline:

1. **Per-item generators** (reproducible regardless of worker count, rank or
   order): datasets that take ``transform_seed`` build a ``torch.Generator`` from
   ``(transform_seed, epoch, index)`` with :func:`item_generator` and pass it to
   their transform. Call ``dataset.set_epoch(epoch)`` alongside
   ``DistributedSampler.set_epoch(epoch)`` each epoch.
2. **Per-worker global seeds**: pass ``worker_init_fn=seed_worker`` to the
   ``DataLoader`` (and a seeded ``generator=`` to it). PyTorch already seeds
   torch's RNG in each worker with ``base_seed + worker_id``; :func:`seed_worker`
   derives Python's ``random`` and NumPy's global seed from it too, so libraries
   using those do not repeat the same stream in every worker.

The built-in shapes data needs neither for its content: items are functions of
``(seed, split, index)``. Under DDP, use ``DistributedSampler(dataset, seed=s)``
for map-style datasets; streaming tar shards split themselves over ranks and
workers (see :class:`~maskmm.data.tar_dataset.TarShardDataset`).
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["item_generator", "mix_seed", "seed_worker"]

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """Hash integers into one 63-bit seed (SplitMix64 finaliser over the sequence)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _MASK64)) & _MASK64
        h = (h * 0xBF58476D1CE4E5B9) & _MASK64
        h ^= h >> 31
        h = (h * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 29
    return h >> 1


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``(seed, epoch, index)``."""
    return torch.Generator().manual_seed(mix_seed(seed, epoch, index))


def seed_worker(worker_id: int) -> None:
    """``DataLoader`` ``worker_init_fn``: seed ``random`` and NumPy from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
