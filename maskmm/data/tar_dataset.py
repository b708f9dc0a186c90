"""Streaming reader for WebDataset-style tar shards (no extra dependency).

Shard format (the one written by ``webdataset``/``img2dataset``): files of one sample are
stored next to each other and share a key, the member path up to the first ``.`` of its
base name: ``000123.jpg``, ``000123.txt``, ``000123.json``. The caption is the ``.txt``
member (UTF-8) or ``json["caption"]``; the image is the first of ``image_exts`` present.
Python's ``tarfile`` reads the shards sequentially; shards may be gzip, bzip2 or xz compressed
(detected from their first bytes); the ``webdataset`` package is not needed.

:class:`TarShardDataset` reads one pass (an epoch) per iteration; for training, the endless and
resumable :class:`maskmm.data.shards.ShardStream` builds on it.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
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
from .real_transforms import UndecodableImage
from .seeding import item_generator
from .skips import empty_skips
from .tokenizers import is_valid_text
from .transforms import _size2

__all__ = ["TarShardDataset", "expand_shards"]

_BRACES = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(\d+)\.\.(\d+)$")


def expand_shards(pattern: str) -> list[str]:
    """Expand brace groups, as the shell and ``webdataset`` do: numeric ranges
    ``"data-{000..002}.tar"`` (zero padding kept) and lists ``"{train,extra}-0.tar"``.

    A group without ``..`` or ``,`` (e.g. ``"{a}"``) is kept as written.
    """
    for m in _BRACES.finditer(pattern):
        body = m.group(1)
        rng = _RANGE.match(body)
        if rng is not None:
            lo, hi = rng.group(1), rng.group(2)
            width = len(lo) if lo.startswith("0") else 0
            choices = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
        elif "," in body:
            choices = body.split(",")
        else:
            continue
        out = []
        for c in choices:
            out.extend(expand_shards(pattern[: m.start()] + c + pattern[m.end() :]))
        return out
    return [pattern]


#: Errors that mark a shard as unreadable (counted as ``"bad_shard"``).
_SHARD_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError)
_BLOCK = tarfile.BLOCKSIZE


class _TarStream:
    """Read-only byte stream that remembers how much it delivered and where its last non-zero byte was.

    A tar archive ends with (at least) two zero blocks; ``tarfile`` silently stops at a shard cut at a
    member boundary or inside a header, so :meth:`TarShardDataset._groups` checks the end itself.
    """

    def __init__(self, f) -> None:
        self.f, self.pos, self.last_nonzero = f, 0, 0

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        body = data.rstrip(b"\0")
        if body:
            self.last_nonzero = self.pos + len(body)
        self.pos += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 16):
            pass


def _open_decompressed(path: str):
    """``path`` opened for reading, decompressed when it starts with a gzip, bzip2 or xz header."""
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller (through the wrapper)
    head = raw.read(6)
    raw.seek(0)
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    if head.startswith(b"BZh"):
        return bz2.BZ2File(raw, mode="rb"), raw
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw, mode="rb"), raw
    return raw, raw


def _split_key(name: str) -> tuple[str, str]:
    head, base = os.path.split(name)
    if "." not in base:
        return name, ""
    stem, ext = base.split(".", 1)
    return os.path.join(head, stem), ext.lower()


class TarShardDataset(IterableDataset):
    """Iterate image-caption samples from tar shards, split over DDP ranks and loader workers.

    Args:
        shards: shard paths, or a brace pattern (see :func:`expand_shards`).
        image_exts: accepted image extensions, in order of preference.
        transform: optional ``transform(item, generator=...) -> item``. One with
            ``decodes_images = True`` (:mod:`maskmm.data.real_transforms`) receives the encoded image
            bytes and decodes them itself (decoding, cropping and resizing in one pass).
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
    the key), ``index`` = ``shard_number * 2**32 + sample_ordinal_in_shard`` (unique, stable), ``key``,
    ``skipped`` (see below).

    Broken samples never raise; they are skipped and counted in :attr:`skipped`: ``"missing_image"``,
    ``"empty_caption"`` (no or blank caption, or bad JSON), ``"bad_text"`` (the caption is not valid
    Unicode: a ``.txt`` that is not UTF-8, or a JSON caption with a lone surrogate; dropped, not
    repaired), ``"bad_image"`` (undecodable) and ``"bad_shard"`` (unreadable or truncated shard, also
    one cut at a member boundary, detected by its missing end-of-archive blocks; complete samples
    before the damage are kept, the one being read is dropped). When every reader reads every shard
    (fewer shards than readers), a bad shard is counted by the first reader only.

    :attr:`skipped` holds the counts of this process. To reach the training loop (also from
    ``DataLoader`` workers) every item carries ``"skipped"``: a dict ``{reason: int}`` over
    :data:`~maskmm.data.skips.SKIP_REASONS`, which :class:`~maskmm.data.ImageTextCollator` sums
    into the batch. A reader looks one item ahead, so every skip of an iteration is carried by
    exactly one of its items: the skips before the first item by the first, the others by the item
    before them (the last item carries the skips after it). Only a reader that yields no item at
    all keeps its counts to :attr:`skipped`.

    Raises:
        ValueError: at construction, when a shard file does not exist (the message names it and the
            pattern it came from).
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
        pattern = None
        if isinstance(shards, (str, os.PathLike)):
            pattern = os.fspath(shards)
            shards = expand_shards(pattern)
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
        for i, s in enumerate(shards):
            if not isinstance(s, (str, os.PathLike)):
                raise TypeError(f"shards[{i}] must be a str or os.PathLike, got {type(s).__name__}")
        self.shards = [os.fspath(s) for s in shards]
        missing = [s for s in self.shards if not os.path.isfile(s)]
        if missing:
            source = f" (expanded from the pattern {pattern!r})" if pattern is not None else ""
            raise ValueError(
                f"shards: {len(missing)} of {len(self.shards)} shard files do not exist{source}, "
                f"e.g. {missing[0]!r}"
            )
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

    def _skip(self, pending: dict[str, int], reason: str) -> None:
        self.skipped[reason] += 1
        pending[reason] += 1

    def _groups(
        self, path: str, pending: dict[str, int], count_bad_shard: bool = True
    ) -> Iterator[tuple[str, dict[str, bytes]]]:
        key, group = None, {}
        complete = False
        raw = None
        try:
            f, raw = _open_decompressed(path)
            with f:
                stream = _TarStream(f)
                with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
                    for member in tar:
                        if not member.isfile():
                            continue
                        k, ext = _split_key(member.name)
                        if k != key and key is not None:
                            yield key, group
                            group = {}
                        key = k
                        m = tar.extractfile(member)
                        group[ext] = m.read() if m is not None else b""
                    end = tar.offset  # where tarfile stopped: the end-of-archive blocks, if any
                stream.drain()
            # complete: only zero bytes after the last member, at least the two end-of-archive blocks
            complete = stream.last_nonzero <= end and stream.pos - end >= 2 * _BLOCK
        except _SHARD_ERRORS:
            complete = False
        finally:
            if raw is not None:
                raw.close()
        if not complete:
            if count_bad_shard:
                self._skip(pending, "bad_shard")
            key = None  # the sample being read when the shard broke may be incomplete: drop it
        if key is not None:
            yield key, group

    def _item(self, key: str, group: dict[str, bytes], index: int, pending: dict[str, int]) -> dict | None:
        meta: dict = {}
        if "json" in group:
            try:
                meta = json.loads(group["json"].decode("utf-8"))
                if not isinstance(meta, dict):
                    meta = {}
            except (UnicodeDecodeError, json.JSONDecodeError):
                meta = {}
        caption, bad_text = None, False
        if "txt" in group:
            try:
                caption = group["txt"].decode("utf-8")
            except UnicodeDecodeError:
                caption, bad_text = None, True
        if caption is None and isinstance(meta.get("caption"), str):
            caption = meta["caption"]
            if not is_valid_text(caption):
                caption, bad_text = None, True
        ext = next((e for e in self.image_exts if e in group), None)
        if ext is None:
            self._skip(pending, "missing_image")
            return None
        if caption is None or not caption.strip():
            self._skip(pending, "bad_text" if bad_text else "empty_caption")
            return None
        if getattr(self.transform, "decodes_images", False):
            image = group[ext]  # encoded: the transform decodes it (undecodable: counted by _produce)
        else:
            try:
                image = decode_image(group[ext])
            except DECODE_ERRORS:
                self._skip(pending, "bad_image")
                return None
        image_id = meta.get("image_id")
        if isinstance(image_id, bool) or not isinstance(image_id, int):
            image_id = zlib.crc32(key.encode("utf-8"))
        return {"image": image, "caption": caption.strip(), "image_id": image_id, "index": index, "key": key}

    def _produce(
        self, key: str, group: dict[str, bytes], index: int, epoch: int, pending: dict[str, int]
    ) -> dict | None:
        """The finished item of a sample (decoded, transformed, resized), or ``None`` when skipped.

        A transform with ``decodes_images = True`` (see :mod:`maskmm.data.real_transforms`) gets the
        encoded image (``bytes``) and decodes it; the
        :class:`~maskmm.data.real_transforms.UndecodableImage` it raises counts the sample as
        ``"bad_image"`` (any other error propagates).
        """
        item = self._item(key, group, index, pending)
        if item is None:
            return None
        if self.transform is not None:
            gen = None if self.transform_seed is None else item_generator(self.transform_seed, epoch, index)
            if getattr(self.transform, "decodes_images", False):
                try:
                    item = self.transform(item, generator=gen)
                except UndecodableImage:
                    self._skip(pending, "bad_image")
                    return None
            else:
                item = self.transform(item, generator=gen)
        return fit_image(item, self.image_size)

    def __iter__(self) -> Iterator[dict]:
        part, parts = self._reader()
        order = list(range(len(self.shards)))
        if self.shuffle_shards:
            order = [int(i) for i in np.random.default_rng([self.seed, self.epoch]).permutation(len(order))]
        by_shard = len(order) >= parts
        mine = order[part::parts] if by_shard else order
        seen = 0
        pending = empty_skips()
        held: dict | None = None
        for shard_no in mine:
            groups = self._groups(self.shards[shard_no], pending, count_bad_shard=by_shard or part == 0)
            for ordinal, (key, group) in enumerate(groups):
                if not by_shard:
                    seen += 1
                    if (seen - 1) % parts != part:
                        continue
                index = (shard_no << 32) + ordinal
                item = self._produce(key, group, index, self.epoch, pending)
                if item is None:
                    continue
                if held is not None:  # one item of lookahead: skips up to this item go with the held one
                    held["skipped"] = dict(pending)
                    pending.update(empty_skips())  # cleared in place: the shard reader holds this dict
                    yield held
                held = item
        if held is not None:
            held["skipped"] = pending
            yield held
