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
from .transforms import _size2

__all__ = ["JsonCaptionDataset"]


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
    (the item actually returned: the next one when the requested image is undecodable).

    Broken records never raise; they are skipped and counted in :attr:`skipped` (a ``Counter``):
    ``"bad_record"`` (not a dict, missing/ill-typed ``image`` or ``caption``), ``"empty_caption"``
    (no non-blank caption), ``"missing_file"`` (with ``check_files``), ``"bad_image"`` (found
    undecodable while reading; counted once per item). With ``DataLoader`` workers, read-time
    counts stay in the worker processes; count in the main process (``num_workers=0``) to audit.
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
        self.image_keys: list[object] = []
        self.images: list[str] = []
        self.image_captions: list[list[str]] = []
        key_to_id: dict[str, int] = {}
        for path in ann_files:
            with open(path, encoding="utf-8") as f:
                records = json.load(f)
            if not isinstance(records, list):
                raise ValueError(
                    f"annotation file {os.fspath(path)!r} must hold a JSON list, got {type(records).__name__}"
                )
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
        captions = [c.strip() for c in caption if c.strip()]
        if not captions:
            self.skipped["empty_caption"] += 1
            return None
        path = os.path.join(self.image_root, rec["image"])
        if check_files and not os.path.isfile(path):
            self.skipped["missing_file"] += 1
            return None
        return path, captions, rec.get("image_id", rec["image"])

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
            return fit_image(item, self.image_size)
        raise RuntimeError(
            f"no decodable image found from index {index} "
            f"({failures} undecodable, max_retries={self.max_retries})"
        )
