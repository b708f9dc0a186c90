"""ALBEF-style JSON annotations: ``[{"image": path, "caption": str | [str], "image_id": ...}, ...]``."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from .images import DECODE_ERRORS, decode_image, fit_image
from .seeding import item_generator
from .skips import empty_skips
from .tokenizers import is_valid_text
from .transforms import _size2

__all__ = ["JsonCaptionDataset"]


def _read_json(path: str) -> object:
    """Parse one annotation file; ``ValueError`` naming the file (and line) when that fails."""
    if not os.path.isfile(path):
        what = "is a directory, not a file" if os.path.isdir(path) else "does not exist"
        raise ValueError(f"annotation file {path!r} {what}")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")  # a leading byte order mark is accepted
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(
            f"annotation file {path!r} is not UTF-8 text: byte 0x{raw[e.start]:02x} at line {line} "
            f"(byte offset {e.start}) cannot be decoded ({e.reason}); re-encode the file as UTF-8"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"annotation file {path!r} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}"
        ) from None


class JsonCaptionDataset(Dataset):
    """Image-caption pairs from ALBEF-style JSON annotation files and an image root.

    Args:
        ann_files: one or more JSON files, each a list of records with ``"image"`` (path relative to
            ``image_root``, or absolute), ``"caption"`` (``str`` or list of ``str``) and optionally
            ``"image_id"`` (any JSON value; default: the image path).
        image_root: directory the image paths are relative to.
        expand_captions: ``True``: one item per (image, caption) pair, ``"caption"`` a ``str``
            (training). ``False``: one item per record, ``"caption"`` the list of its captions
            (retrieval evaluation).
        transform: optional ``transform(item, generator=...) -> item`` (see :mod:`maskmm.data.transforms`).
        transform_seed: seed per-item transform generators from ``(transform_seed, epoch, index)``.
        check_files: test at construction that every image file exists.
        image_size: if set, every image is resized to this size (``int`` = square) after ``transform``
            when its size differs, so items of different photos can be collated.
        max_retries: an undecodable image is replaced by the next readable item; more than this many
            new decode failures within one read raise ``RuntimeError`` (the data is likely unusable).

    Items: ``image float32 [3, H, W]``, ``caption``, ``image_id`` (``int``: contiguous id of the
    record's image id, in order of first appearance; :attr:`image_keys` maps back), ``index``
    (the item actually returned: the next one when the requested image is undecodable), ``skipped``
    (see below).

    Broken records never raise; they are skipped and counted in :attr:`skipped` (a ``Counter``):
    ``"bad_record"`` (not a dict, missing/ill-typed ``image`` or ``caption``), ``"bad_text"`` (one per
    caption that is not valid Unicode text, e.g. holding a lone surrogate such as the JSON escape
    ``"\\ud800"``: such captions are dropped, not repaired), ``"empty_caption"`` (no non-blank
    caption), ``"missing_file"`` (with ``check_files``), ``"bad_image"`` (found undecodable while
    reading; counted once per item and process).

    Skip counts reach the training loop through the items: each item's ``"skipped"`` is a dict
    ``{reason: int}`` over :data:`~maskmm.data.skips.SKIP_REASONS` of the images found undecodable
    while producing it (also in ``DataLoader`` workers), which
    :class:`~maskmm.data.ImageTextCollator` sums into the batch. The counts of records dropped
    while loading the annotations are in :attr:`skipped` of the process that built the dataset.

    Raises:
        ValueError: an annotation file does not exist, is not UTF-8 text or not JSON (the message
            names the file and the line), does not hold a list, or no record is usable (the
            message names the annotation files, the counts and, when image files are missing,
            ``image_root`` and an example missing path).
    """

    def __init__(
        self,
        ann_files: str | os.PathLike | Sequence[str | os.PathLike],
        image_root: str | os.PathLike = "",
        *,
        expand_captions: bool = True,
        transform: Callable | None = None,
        transform_seed: int | None = None,
        check_files: bool = True,
        max_retries: int = 10,
        image_size: int | tuple[int, int] | None = None,
    ) -> None:
        if isinstance(ann_files, (str, os.PathLike)):
            ann_files = [ann_files]
        if not isinstance(ann_files, Sequence) or not ann_files:
            raise ValueError(f"ann_files must be a path or a non-empty sequence of paths, got {ann_files!r}")
        for i, path in enumerate(ann_files):
            if not isinstance(path, (str, os.PathLike)):
                raise TypeError(f"ann_files[{i}] must be a str or os.PathLike, got {type(path).__name__}")
        if not isinstance(image_root, (str, os.PathLike)):
            raise TypeError(f"image_root must be a str or os.PathLike, got {type(image_root).__name__}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a non-negative int, got {max_retries!r}")
        self.image_root = os.fspath(image_root)
        self.expand_captions, self.transform, self.transform_seed = expand_captions, transform, transform_seed
        self.max_retries = max_retries
        self.image_size = None if image_size is None else _size2("image_size", image_size)
        self.skipped: Counter[str] = Counter()
        self._missing_example: str | None = None
        self.image_keys: list[object] = []
        self.images: list[str] = []
        self.image_captions: list[list[str]] = []
        key_to_id: dict[str, int] = {}
        n_records = 0
        for path in ann_files:
            records = _read_json(os.fspath(path))
            if not isinstance(records, list):
                raise ValueError(
                    f"annotation file {os.fspath(path)!r} must hold a JSON list, got {type(records).__name__}"
                )
            n_records += len(records)
            for rec in records:
                parsed = self._parse(rec, check_files)
                if parsed is None:
                    continue
                image_path, captions, key = parsed
                ident = json.dumps(key, sort_keys=True)
                if ident not in key_to_id:
                    key_to_id[ident] = len(self.images)
                    self.image_keys.append(key)
                    self.images.append(image_path)
                    self.image_captions.append([])
                self.image_captions[key_to_id[ident]].extend(captions)
        if not self.images:
            self._no_usable_record([os.fspath(p) for p in ann_files], n_records)
        if expand_captions:
            self.entries = [(i, j) for i, caps in enumerate(self.image_captions) for j in range(len(caps))]
        else:
            self.entries = [(i, -1) for i in range(len(self.images))]
        self._bad: set[int] = set()
        self.epoch = 0

    def _parse(self, rec: object, check_files: bool) -> tuple[str, list[str], object] | None:
        if not isinstance(rec, dict) or not isinstance(rec.get("image"), str) or not rec["image"]:
            self.skipped["bad_record"] += 1
            return None
        caption = rec.get("caption")
        if isinstance(caption, str):
            caption = [caption]
        if not isinstance(caption, list) or not all(isinstance(c, str) for c in caption):
            self.skipped["bad_record"] += 1
            return None
        bad_text = sum(not is_valid_text(c) for c in caption)
        if bad_text:
            self.skipped["bad_text"] += bad_text
        captions = [c.strip() for c in caption if c.strip() and is_valid_text(c)]
        if not captions:
            if not bad_text:
                self.skipped["empty_caption"] += 1
            return None
        path = os.path.join(self.image_root, rec["image"])
        if check_files and not os.path.isfile(path):
            self.skipped["missing_file"] += 1
            if self._missing_example is None:
                self._missing_example = path
            return None
        return path, captions, rec.get("image_id", rec["image"])

    def _no_usable_record(self, ann_files: list[str], n_records: int) -> None:
        files = ann_files[0] if len(ann_files) == 1 else ann_files
        if n_records == 0:
            raise ValueError(f"annotation file(s) {files!r} hold no records")
        counts = dict(sorted(self.skipped.items()))
        if self.skipped["missing_file"]:
            raise ValueError(
                f"no usable record in annotation file(s) {files!r}: {self.skipped['missing_file']} of "
                f"{n_records} records name an image file that does not exist under image_root "
                f"{self.image_root!r} (e.g. {self._missing_example!r}); check image_root "
                f"(skipped: {counts})"
            )
        raise ValueError(
            f"no usable record in annotation file(s) {files!r}: all {n_records} records were skipped "
            f"({counts}); records need an 'image' path and a non-blank 'caption'"
        )

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        index = int(index)
        n = len(self.entries)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of length {n}")
        failures = 0
        skipped = empty_skips()
        for step in range(n):
            k = (index + step) % n
            if k in self._bad:
                continue
            img_idx, cap_idx = self.entries[k]
            try:
                image = decode_image(self.images[img_idx])
            except DECODE_ERRORS:
                self._bad.add(k)
                self.skipped["bad_image"] += 1
                skipped["bad_image"] += 1
                failures += 1
                if failures > self.max_retries:
                    break
                continue
            caps = self.image_captions[img_idx]
            item = {
                "image": image,
                "caption": caps[cap_idx] if cap_idx >= 0 else list(caps),
                "image_id": img_idx,
                "index": k,
            }
            if self.transform is not None:
                gen = (
                    None
                    if self.transform_seed is None
                    else item_generator(self.transform_seed, self.epoch, k)
                )
                item = self.transform(item, generator=gen)
            item = fit_image(item, self.image_size)
            item["skipped"] = skipped
            return item
        img_idx = self.entries[index][0]
        raise RuntimeError(
            f"no decodable image found from index {index} "
            f"({failures} undecodable, max_retries={self.max_retries}; e.g. {self.images[img_idx]!r}, "
            f"image_root {self.image_root!r})"
        )
