"""Streaming reader for WebDataset-style tar shards (no extra dependency).

Shard format (the one written by ``webdataset``/``img2dataset``): files of one sample are
stored next to each other and share a key, the member path up to the first ``.`` of its
base name: ``000123.jpg``, ``000123.txt``, ``000123.json``. The caption is the ``.txt``
member (UTF-8) or ``json["caption"]``; the image is the first of ``image_exts`` present.
Python's ``tarfile`` reads the shards sequentially, so plain local files and file-like
objects work; the ``webdataset`` package is not needed.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .images import DECODE_ERRORS, decode_image, fit_image
from .seeding import item_generator
from .transforms import _size2

__all__ = ["TarShardDataset", "expand_shards"]

_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_shards(pattern: str) -> list[str]:
    """Expand numeric brace ranges: ``"data-{000..002}.tar"`` -> three names (zero padding kept)."""
    m = _BRACES.search(pattern)
    if m is None:
        return [pattern]
    lo, hi = m.group(1), m.group(2)
    width = len(lo) if lo.startswith("0") else 0
    out = []
    for i in range(int(lo), int(hi) + 1):
        out.extend(expand_shards(pattern[: m.start()] + str(i).zfill(width) + pattern[m.end() :]))
    return out


def _split_key(name: str) -> tuple[str, str]:
    head, base = os.path.split(name)
    if "." not in base:
        return name, ""
    stem, ext = base.split(".", 1)
    return os.path.join(head, stem), ext.lower()


class TarShardDataset(IterableDataset):
    """Iterate image-caption samples from tar shards, split over DDP ranks and loader workers.

    Args:
        shards: shard paths, or a pattern with a numeric brace range (see :func:`expand_shards`).
        image_exts: accepted image extensions, in order of preference.
        transform: optional ``transform(item, generator=...) -> item``.
        transform_seed: seed per-item transform generators from ``(transform_seed, epoch, index)``.
        shuffle_shards: visit shards in an order drawn from ``(seed, epoch)`` (see :meth:`set_epoch`).
        seed: seed of the shard order.
        image_size: if set, images are resized to this size (``int`` = square) after ``transform``
            when their size differs, so items can be collated.
        rank, world_size: this process's share; default from ``torch.distributed`` when initialised,
            else ``0`` and ``1``.

    Splitting: the ``world_size * num_workers`` readers take every n-th shard when there are at
    least as many shards as readers (each sample is read once); otherwise every reader reads all
    shards and keeps every n-th sample. Shard-level splitting gives readers unequal sample counts
    when shards differ in size; under DDP, cap the steps per epoch accordingly.

    Items: ``image``, ``caption``, ``image_id`` (``json["image_id"]`` when an int, else a CRC32 of
    the key), ``index`` = ``shard_number * 2**32 + sample_ordinal_in_shard`` (unique, stable), ``key``.

    Broken samples never raise; they are skipped and counted in :attr:`skipped`: ``"missing_image"``,
    ``"empty_caption"`` (no or blank caption, or bad JSON), ``"bad_image"`` (undecodable) and
    ``"bad_shard"`` (unreadable or truncated shard; complete samples before the damage are kept, the
    one being read is dropped).
    Counts are per reader: with ``DataLoader`` workers they stay in the worker processes.
    """

    def __init__(
        self,
        shards: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        image_exts: Sequence[str] = ("jpg", "jpeg", "png", "webp"),
        transform: Callable | None = None,
        transform_seed: int | None = None,
        shuffle_shards: bool = False,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        image_size: int | tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(shards, (str, os.PathLike)):
            shards = expand_shards(os.fspath(shards))
        if not isinstance(shards, Sequence) or not shards:
            raise ValueError(
                f"shards must be a path, a pattern or a non-empty sequence of paths, got {shards!r}"
            )
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
        if (rank is None) != (world_size is None):
            raise ValueError(
                f"give both rank and world_size or neither, got rank={rank}, world_size={world_size}"
            )
        if world_size is not None and not (
            isinstance(world_size, int) and world_size >= 1 and 0 <= rank < world_size
        ):
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.shards = [os.fspath(s) for s in shards]
        self.image_exts = tuple(e.lower().lstrip(".") for e in image_exts)
        self.transform, self.transform_seed = transform, transform_seed
        self.shuffle_shards, self.seed = shuffle_shards, seed
        self.rank, self.world_size = rank, world_size
        self.image_size = None if image_size is None else _size2("image_size", image_size)
        self.skipped: Counter[str] = Counter()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _reader(self) -> tuple[int, int]:
        rank, world = self.rank, self.world_size
        if rank is None:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
            else:
                rank, world = 0, 1
        info = get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        return rank * nw + wid, world * nw

    def _groups(self, path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
        key, group = None, {}
        try:
            with tarfile.open(path, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    k, ext = _split_key(member.name)
                    if k != key and key is not None:
                        yield key, group
                        group = {}
                    key = k
                    f = tar.extractfile(member)
                    group[ext] = f.read() if f is not None else b""
        except (tarfile.TarError, OSError, EOFError):
            self.skipped["bad_shard"] += 1
            key = None  # the sample being read when the shard broke is incomplete: drop it
        if key is not None:
            yield key, group

    def _item(self, key: str, group: dict[str, bytes], index: int) -> dict | None:
        meta: dict = {}
        if "json" in group:
            try:
                meta = json.loads(group["json"].decode("utf-8"))
                if not isinstance(meta, dict):
                    meta = {}
            except (UnicodeDecodeError, json.JSONDecodeError):
                meta = {}
        caption = None
        if "txt" in group:
            try:
                caption = group["txt"].decode("utf-8")
            except UnicodeDecodeError:
                caption = None
        if caption is None and isinstance(meta.get("caption"), str):
            caption = meta["caption"]
        ext = next((e for e in self.image_exts if e in group), None)
        if ext is None:
            self.skipped["missing_image"] += 1
            return None
        if caption is None or not caption.strip():
            self.skipped["empty_caption"] += 1
            return None
        try:
            image = decode_image(group[ext])
        except DECODE_ERRORS:
            self.skipped["bad_image"] += 1
            return None
        image_id = meta.get("image_id")
        if isinstance(image_id, bool) or not isinstance(image_id, int):
            image_id = zlib.crc32(key.encode("utf-8"))
        return {"image": image, "caption": caption.strip(), "image_id": image_id, "index": index, "key": key}

    def __iter__(self) -> Iterator[dict]:
        part, parts = self._reader()
        order = list(range(len(self.shards)))
        if self.shuffle_shards:
            order = [int(i) for i in np.random.default_rng([self.seed, self.epoch]).permutation(len(order))]
        by_shard = len(order) >= parts
        mine = order[part::parts] if by_shard else order
        seen = 0
        for shard_no in mine:
            for ordinal, (key, group) in enumerate(self._groups(self.shards[shard_no])):
                if not by_shard:
                    seen += 1
                    if (seen - 1) % parts != part:
                        continue
                index = (shard_no << 32) + ordinal
                item = self._item(key, group, index)
                if item is None:
                    continue
                if self.transform is not None:
                    gen = (
                        None
                        if self.transform_seed is None
                        else item_generator(self.transform_seed, self.epoch, index)
                    )
                    item = self.transform(item, generator=gen)
                yield fit_image(item, self.image_size)
