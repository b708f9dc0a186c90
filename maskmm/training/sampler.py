"""A resumable, rank-sharded, seeded sampler: the batch order is a pure function of (seed, epoch)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from maskmm._checks import check_int

__all__ = ["ResumableSampler"]


class ResumableSampler(Sampler[int]):
    """Shuffled indices of one epoch, sharded over ranks, that can start mid-epoch.

    Epoch ``e`` uses ``torch.randperm(n)`` from a generator seeded with ``seed + e``, cut into
    consecutive groups of ``world * block`` positions (the tail that fills no group is dropped, so
    every rank sees the same count); rank ``r`` takes positions ``[r * block, (r + 1) * block)`` of
    each group. With ``block`` = the per-rank batch size, the ranks' batches of a step are, in rank
    order, the batch one process with the global batch size would draw (``block = 1``: positions
    ``r, r + world, ...``). :meth:`set_epoch` picks the
    epoch and ``start`` (in samples of this rank) skips what was already consumed, so a resumed
    run sees exactly the indices the uninterrupted run would have.

    Args:
        length: dataset length ``n``.
        seed: base seed; rank, world_size, block: sharding; shuffle: ``False`` keeps ``0..n-1``
            order.
    """

    def __init__(
        self,
        length: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        block: int = 1,
    ) -> None:
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"rank must lie in [0, world_size) with world_size >= 1, got {rank}, {world_size}"
            )
        self.length, self.seed, self.rank, self.world_size, self.shuffle = (
            length,
            seed,
            rank,
            world_size,
            shuffle,
        )
        self.block = check_int("block", block, minimum=1)
        self.epoch = 0
        self.start = 0

    @property
    def per_rank(self) -> int:
        return self.length // (self.world_size * self.block) * self.block

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if epoch < 0 or not 0 <= start <= self.per_rank:
            raise ValueError(f"epoch must be >= 0 and start in [0, {self.per_rank}], got {epoch}, {start}")
        self.epoch, self.start = int(epoch), int(start)

    def indices(self) -> torch.Tensor:
        """``long [per_rank - start]``: this rank's remaining indices of the current epoch."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=g)
        else:
            order = torch.arange(self.length)
        groups = order[: self.per_rank * self.world_size].view(-1, self.world_size, self.block)
        return groups[:, self.rank].reshape(-1)[self.start :]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.per_rank - self.start
