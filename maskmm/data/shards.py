"""A resumable training stream over WebDataset tar shards (``data.kind: shards``).

:class:`ShardStream` reads the shards of :class:`~maskmm.data.TarShardDataset` (same sample layout,
same skip counting) as an endless stream of epochs, split over DDP ranks and ``DataLoader`` workers,
whose position can be saved and restored exactly.

**Readers.** Each (rank, worker) pair is one *reader*: ``readers = world_size * max(1, num_workers)``,
reader ``j = rank * max(1, num_workers) + worker``. Epoch ``e`` visits the shards in an order drawn
from ``(seed, e)``; with at least as many shards as readers, reader ``j`` reads every
``readers``-th shard of that order (the start rotates with the epoch so that the readers holding one
more shard change); with fewer shards than readers, the readers sharing a shard split its samples
(``ordinal % sharers``) and each reads one shard per epoch. Every sample is read exactly once per
epoch. Each reader goes on to its next epoch as soon as it is through its share of the current one
(readers run through epochs at their own pace), so the stream never runs dry: there is no epoch end
at which DDP ranks could disagree on the number of steps. A reader that finds no usable sample in a
whole epoch raises ``RuntimeError`` (instead of stalling the ``DataLoader``).

**Positions.** Each item carries ``item["stream_position"] = (readers, reader, epoch, shard, offset,
ordinal)``: where its reader's *next* item is. :class:`StreamCollator` copies the batch's last one into
``batch["stream/position"]``; the training loop hands each consumed batch to :meth:`ShardStream.observe`
(which removes that entry), and :meth:`ShardStream.state_dict` turns what was consumed into a state
that :meth:`ShardStream.load_state_dict` restores. Items also carry ``"epoch"``.

**Resume contract.** After ``load_state_dict``, no consumed sample is read again and no sample is
lost: within every epoch each sample is delivered exactly once over the interrupted and the resumed
run together, at sample granularity. Skip counts (``item["skipped"]``) of the consumed part are
not counted again. With the same number of readers (world size x workers) the resumed stream
delivers exactly the batches the uninterrupted run would have (same order, same augmentation with
``transform_seed``). With a different number of readers, the unread remainder of every epoch that
was started is dealt out to the new readers before they go on with the next epochs; the order then
differs from an uninterrupted run, the exactly-once guarantee holds. Samples a ``DataLoader`` had
prefetched but the loop had not consumed are not consumed (they are read again). Cost of a resume:
each reader re-reads (without decoding) the consumed part of the shard it was in. Restoring
requires the same shard list (compared by a fingerprint of the resolved names) and the same
``seed``; the shard files must not change in between (same samples in the same order).
"""

from __future__ import annotations

import glob
import hashlib
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import get_worker_info

from .skips import empty_skips
from .tar_dataset import TarShardDataset, expand_shards

__all__ = [
    "STREAM_POSITION_KEY",
    "Piece",
    "ShardStream",
    "StreamCollator",
    "resolve_shards",
    "shard_plan",
]

#: Batch key of the stream position of a batch's last item (``int64 [6]``), see :class:`StreamCollator`.
STREAM_POSITION_KEY = "stream/position"
#: Item key of the stream position.
POSITION_ITEM_KEY = "stream_position"
_STATE_VERSION = 1
_GLOB = ("*", "?", "[")


def resolve_shards(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Shard paths from a pattern or a list of patterns, in order.

    Each pattern is brace-expanded (``{00000..00331}`` ranges and ``{a,b}`` lists, see
    :func:`~maskmm.data.expand_shards`); a resulting name with ``*``, ``?`` or ``[`` is a glob,
    replaced by its matches in sorted order. Raises ``ValueError`` for an empty spec or a glob that
    matches nothing; whether the files exist is checked by :class:`ShardStream`.
    """
    patterns = [spec] if isinstance(spec, (str, os.PathLike)) else spec
    if not isinstance(patterns, Sequence) or not patterns:
        raise ValueError(f"shards must be a pattern or a non-empty list of patterns, got {spec!r}")
    out: list[str] = []
    for i, pat in enumerate(patterns):
        if not isinstance(pat, (str, os.PathLike)) or not os.fspath(pat):
            raise ValueError(f"shards[{i}] must be a non-empty path or pattern, got {pat!r}")
        for name in expand_shards(os.fspath(pat)):
            if any(c in name for c in _GLOB):
                found = sorted(glob.glob(name))
                if not found:
                    raise ValueError(f"shard pattern {os.fspath(pat)!r}: no file matches {name!r}")
                out.extend(found)
            else:
                out.append(name)
    return out


class Piece(NamedTuple):
    """What a reader reads of a shard: the samples ``ordinal >= start`` with ``ordinal % stride == offset``
    (``ordinal``: the sample's place in the shard, counted from 0)."""

    epoch: int
    shard: int
    stride: int
    offset: int
    start: int


def shard_plan(epoch: int, reader: int, readers: int, n_shards: int, seed: int) -> list[Piece]:
    """The pieces reader ``reader`` of ``readers`` reads in ``epoch`` (see the module notes)."""
    order = np.random.default_rng([seed, epoch]).permutation(n_shards)
    if n_shards >= readers:
        first = (reader + epoch) % readers
        return [Piece(epoch, int(s), 1, 0, 0) for s in order[first::readers]]
    slot = reader % n_shards
    sharers = len(range(slot, readers, n_shards))
    return [Piece(epoch, int(order[slot]), sharers, reader // n_shards, 0)]


def _fingerprint(shards: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(shards).encode("utf-8", "surrogatepass")).hexdigest()[:32]


class StreamCollator:
    """Wrap a ``collate_fn`` (e.g. :class:`~maskmm.data.ImageTextCollator`) for :class:`ShardStream`
    batches: adds ``batch["stream/position"]``, the ``int64 [6]`` stream position of the last item
    (all items of a ``DataLoader`` batch come from one reader). Pass the batch to
    :meth:`ShardStream.observe` once it is consumed; it removes the entry."""

    def __init__(self, collate: Callable[[Sequence[Mapping]], MutableMapping[str, Any]]) -> None:
        if not callable(collate):
            raise TypeError(f"collate must be callable, got {type(collate).__name__}")
        self.collate = collate

    def __call__(self, items: Sequence[Mapping]) -> MutableMapping[str, Any]:
        batch = self.collate(items)
        pos = items[-1].get(POSITION_ITEM_KEY) if items else None
        if pos is not None:
            batch[STREAM_POSITION_KEY] = torch.tensor(pos, dtype=torch.long)
        return batch


class ShardStream(TarShardDataset):
    """Endless, resumable stream of image-caption items from tar shards, for training.

    Args:
        shards: a pattern or a list of patterns (see :func:`resolve_shards`).
        seed: seed of the per-epoch shard order.
        num_workers: the ``DataLoader``'s ``num_workers`` (``0``: read in the main process); iterating
            with another worker count raises ``RuntimeError``.
        rank, world_size: this process's share; default from ``torch.distributed`` when initialised,
            else ``0`` and ``1``.
        image_exts, transform, transform_seed, image_size: as for :class:`~maskmm.data.TarShardDataset`;
            per-item transform generators are seeded from ``(transform_seed, epoch, index)``.

    Items are those of :class:`~maskmm.data.TarShardDataset` (``index = shard << 32 | ordinal`` names
    the sample, ``skipped`` carries the skip counts) plus ``epoch`` and ``stream_position``. See the
    module notes for the order, the readers and the resume contract.

    Raises:
        ValueError: no shard, a missing shard file, or a glob that matches nothing.
    """

    def __init__(
        self,
        shards: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        seed: int = 0,
        num_workers: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        image_exts: Sequence[str] = ("jpg", "jpeg", "png", "webp"),
        transform: Callable | None = None,
        transform_seed: int | None = None,
        image_size: int | tuple[int, int] | None = None,
    ) -> None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        if rank is None and world_size is None:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
            else:
                rank, world_size = 0, 1
        super().__init__(
            resolve_shards(shards),
            image_exts=image_exts,
            transform=transform,
            transform_seed=transform_seed,
            shuffle_shards=True,
            seed=seed,
            rank=rank,
            world_size=world_size,
            image_size=image_size,
        )
        self.num_workers, self.workers = num_workers, max(1, num_workers)
        self.readers = self.world_size * self.workers
        self.fingerprint = _fingerprint(self.shards)
        self._state: dict[str, Any] = {
            "readers": self.readers,
            "workers": self.workers,
            "rotation": 0,
            "streams": [{"pending": [], "plan_start": 0} for _ in range(self.readers)],
        }
        self._seen: dict[int, tuple[int, int, int, int]] = {}
        self._last_local: int | None = None

    def set_epoch(self, epoch: int) -> None:
        raise TypeError(
            "ShardStream has no set_epoch: it is an endless stream whose readers move to the next epoch "
            "by themselves; save and restore its position with state_dict() / load_state_dict()"
        )

    # ------------------------------------------------------------------ plan

    def _plan(self, epoch: int, reader: int, readers: int | None = None) -> list[Piece]:
        return shard_plan(epoch, reader, readers or self.readers, len(self.shards), self.seed)

    def _advance(self, stream: dict, reader: int, pos: tuple[int, int, int, int]) -> dict:
        """``stream`` from the position ``pos = (epoch, shard, offset, ordinal)`` of its next item on."""
        epoch, shard, offset, ordinal = pos
        pending = [Piece(*p) for p in stream["pending"]]
        for k, p in enumerate(pending):
            if (p.epoch, p.shard, p.offset) == (epoch, shard, offset):
                rest = [p._replace(start=ordinal), *pending[k + 1 :]]
                return {"pending": [list(q) for q in rest], "plan_start": stream["plan_start"]}
        if epoch >= stream["plan_start"]:
            plan = self._plan(epoch, reader)
            for k, p in enumerate(plan):
                if (p.shard, p.offset) == (shard, offset):
                    rest = [p._replace(start=ordinal), *plan[k + 1 :]]
                    return {"pending": [list(q) for q in rest], "plan_start": epoch + 1}
        raise ValueError(f"stream position {pos} is not in the stream of reader {reader}")

    def _current(self) -> dict[str, Any]:
        """The base state moved past everything observed."""
        streams = list(self._state["streams"])
        for j, pos in self._seen.items():
            streams[j] = self._advance(streams[j], j, pos)
        rotation = self._state["rotation"]
        if self._last_local is not None:
            rotation = (self._last_local + 1) % self.workers
        return {**self._state, "rotation": rotation, "streams": streams}

    def _normalise(self, state: dict[str, Any]) -> dict[str, Any]:
        """``state`` for this stream's number of readers: when it differs, the unread pieces of every
        started epoch are dealt out to the readers, who then go on with the next epochs."""
        if state["readers"] == self.readers:
            if state["workers"] != self.workers:
                state = {**state, "rotation": 0, "workers": self.workers}
            return state
        old = state["readers"]
        frontier = max(s["plan_start"] for s in state["streams"])
        left = []
        for j, s in enumerate(state["streams"]):
            pieces = [Piece(*p) for p in s["pending"]]
            for e in range(s["plan_start"], frontier):
                pieces.extend(self._plan(e, j, old))
            left.extend((p.epoch, j, k, p) for k, p in enumerate(pieces))
        left.sort(key=lambda t: t[:3])
        streams: list[dict[str, Any]] = [{"pending": [], "plan_start": frontier} for _ in range(self.readers)]
        for i, (*_, p) in enumerate(left):
            streams[i % self.readers]["pending"].append(list(p))
        return {"readers": self.readers, "workers": self.workers, "rotation": 0, "streams": streams}

    # ------------------------------------------------------------------ state

    def observe(self, batch: MutableMapping[str, Any]) -> None:
        """Record that ``batch`` (made by :class:`StreamCollator` from this stream) is consumed, and
        remove its ``"stream/position"`` entry. Call it for every batch the training loop uses."""
        pos = batch.pop(STREAM_POSITION_KEY, None)
        if pos is None:
            raise KeyError(
                f"batch has no {STREAM_POSITION_KEY!r} entry: collate ShardStream batches with StreamCollator"
            )
        readers, j, epoch, shard, offset, ordinal = (int(v) for v in torch.as_tensor(pos).tolist())
        lo = self.rank * self.workers
        if readers != self.readers or not lo <= j < lo + self.workers:
            raise ValueError(
                f"batch from reader {j} of {readers}, but this stream (rank {self.rank}) has readers "
                f"[{lo}, {lo + self.workers}) of {self.readers}"
            )
        self._seen[j] = (epoch, shard, offset, ordinal)
        self._last_local = j - lo

    def state_dict(self) -> dict[str, Any]:
        """The position after the observed batches (this process's readers; under DDP use
        :meth:`gather_state` for every rank's). Plain Python values, for a checkpoint."""
        cur = self._current()
        return {
            "version": _STATE_VERSION,
            "fingerprint": self.fingerprint,
            "shards": len(self.shards),
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            **cur,
        }

    def gather_state(self) -> dict[str, Any]:
        """:meth:`state_dict` of every rank, merged (a collective under DDP: call it on every rank)."""
        local = self.state_dict()
        if self.world_size == 1:
            return local
        parts: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(parts, local)
        return self.merge_states(parts)

    @staticmethod
    def merge_states(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """One state from the :meth:`state_dict` of every rank (each reader's stream from its rank)."""
        by_rank = {int(p["rank"]): p for p in parts}
        world = int(parts[0]["world_size"])
        if sorted(by_rank) != list(range(world)):
            raise ValueError(f"need the state of each of the {world} ranks, got ranks {sorted(by_rank)}")
        first = by_rank[0]
        workers = int(first["workers"])
        streams = [by_rank[j // workers]["streams"][j] for j in range(int(first["readers"]))]
        return {**first, "rank": 0, "world_size": world, "streams": streams}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict` / :meth:`gather_state`) at the next iteration.

        A different number of readers (world size x workers) is accepted (with a warning: the order
        then differs from the uninterrupted run). Raises ``ValueError`` when the shard list or the
        seed differ from the state's.
        """
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            raise ValueError(f"not a ShardStream state (version {_STATE_VERSION}): {type(state).__name__}")
        if state["fingerprint"] != self.fingerprint:
            raise ValueError(
                f"the shard list differs from the saved stream's ({state['shards']} shards then, "
                f"{len(self.shards)} now, or other names): resuming needs the same shards in the same order"
            )
        if int(state["seed"]) != self.seed:
            raise ValueError(f"the shard order seed differs from the saved stream's ({state['seed']})")
        streams = [
            {"pending": [list(map(int, p)) for p in s["pending"]], "plan_start": int(s["plan_start"])}
            for s in state["streams"]
        ]
        if len(streams) != int(state["readers"]):
            raise ValueError(f"state has {len(streams)} reader streams for {state['readers']} readers")
        base = {
            "readers": int(state["readers"]),
            "workers": int(state["workers"]),
            "rotation": int(state["rotation"]),
            "streams": streams,
        }
        if base["readers"] != self.readers:
            warnings.warn(
                f"resuming a shard stream of {base['readers']} readers with {self.readers} (world size x "
                "DataLoader workers): the unread rest of each started epoch is dealt out anew; no sample "
                "is repeated or lost, but the order differs from the uninterrupted run",
                stacklevel=2,
            )
        self._state = self._normalise(base)
        self._seen, self._last_local = {}, None

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        n = 0 if info is None else info.num_workers
        if max(1, n) != self.workers:
            raise RuntimeError(
                f"ShardStream was built for num_workers={self.num_workers} but is read by a DataLoader "
                f"with num_workers={n}"
            )
        state = self._current()
        local = ((0 if info is None else info.id) + state["rotation"]) % self.workers
        j = self.rank * self.workers + local
        return self._read(j, state["streams"][j])

    def _segments(self, reader: int, stream: dict) -> Iterator[tuple[int | None, list[Piece]]]:
        yield None, [Piece(*p) for p in stream["pending"]]
        epoch = stream["plan_start"]
        while True:
            yield epoch, self._plan(epoch, reader)
            epoch += 1

    def _read(self, reader: int, stream: dict) -> Iterator[dict]:
        pending = empty_skips()
        held: dict | None = None
        for plan_epoch, pieces in self._segments(reader, stream):
            produced = 0
            for piece in pieces:
                path = self.shards[piece.shard]
                # a shard split between readers is reported broken by the first of them only
                groups = self._groups(path, pending, count_bad_shard=piece.offset == 0)
                for ordinal, (key, group) in enumerate(groups):
                    if ordinal < piece.start or ordinal % piece.stride != piece.offset:
                        continue
                    index = (piece.shard << 32) + ordinal
                    item = self._produce(key, group, index, piece.epoch, pending)
                    if item is None:
                        continue
                    produced += 1
                    item["epoch"] = piece.epoch
                    if held is not None:  # one item of lookahead: its skips and position go with `held`
                        held["skipped"] = dict(pending)
                        pending.update(empty_skips())  # cleared in place: the shard reader holds it
                        held[POSITION_ITEM_KEY] = (
                            self.readers,
                            reader,
                            piece.epoch,
                            piece.shard,
                            piece.offset,
                            ordinal,
                        )
                        yield held
                    held = item
            if plan_epoch is not None and produced == 0:
                names = ", ".join(repr(self.shards[p.shard]) for p in pieces[:3])
                hint = (
                    "; with fewer shards than readers (world size x DataLoader workers) the readers split "
                    "the samples of a shard: use fewer workers or more shards"
                    if len(self.shards) < self.readers
                    else ""
                )
                raise RuntimeError(
                    f"shard stream reader {reader} of {self.readers} found no usable sample in its share of "
                    f"epoch {plan_epoch} (shards {names}{', ...' if len(pieces) > 3 else ''}; skipped so "
                    f"far by this reader: {dict(+self.skipped)}){hint}"
                )
