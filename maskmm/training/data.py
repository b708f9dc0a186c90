"""Data of a run, for every recipe: tokenizer, training set and collate function (``data`` section).

The built-in data is :class:`maskmm.data.procedural.ShapesDataset` (no decoding, no augmentation);
real data uses a Hugging Face tokenizer from a local folder (``data.tokenizer``) and either ALBEF-style
annotations (``data.kind: json``, :class:`maskmm.data.JsonCaptionDataset`, a map-style dataset) or
WebDataset tar shards (``data.kind: shards``, :class:`maskmm.data.shards.ShardStream`, an endless
resumable stream: the training loop passes each consumed batch to its ``observe`` and keeps its
``gather_state()`` in the checkpoint). Real images get the ``data.train_transform`` augmentation
(:mod:`maskmm.data.real_transforms`); it runs where the items are made, in the ``DataLoader`` workers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from maskmm.data import (
    ImageTextCollator,
    JsonCaptionDataset,
    Normalize,
    ShapesConfig,
    ShapesDataset,
    WordTokenizer,
    named_normalize,
)
from maskmm.data.real_transforms import EvalImageTransform, RandAugment, TrainImageTransform
from maskmm.data.shards import ShardStream, StreamCollator

from .config import RunConfig

__all__ = [
    "build_collate",
    "build_tokenizer",
    "build_train_dataset",
    "eval_image_transform",
    "image_transform",
    "shapes_config",
    "train_image_transform",
]


def shapes_config(cfg: RunConfig) -> ShapesConfig:
    return ShapesConfig(image_size=cfg.data.image_size)


def image_transform(cfg: RunConfig) -> Normalize | None:
    """Per-channel normalisation of the ``[0, 1]`` images (``data.normalize``), or ``None``."""
    return named_normalize(cfg.data.normalize)


def _mean_std(cfg: RunConfig) -> dict[str, Any]:
    norm = named_normalize(cfg.data.normalize)
    return {} if norm is None else {"mean": norm.mean, "std": norm.std}


def train_image_transform(cfg: RunConfig) -> Callable | None:
    """The training transform of real images (``data.train_transform``), normalisation included.

    ``"none"``: only :func:`image_transform` (the readers squash images to ``data.image_size``);
    ``"crop_flip"`` / ``"randaugment"``: a :class:`~maskmm.data.real_transforms.TrainImageTransform`.
    """
    d = cfg.data
    if d.train_transform == "none":
        return image_transform(cfg)
    aug = None
    if d.train_transform == "randaugment":
        aug = RandAugment(d.randaugment_ops, d.randaugment_magnitude)
    return TrainImageTransform(d.image_size, scale=(d.crop_scale_min, 1.0), randaugment=aug, **_mean_std(cfg))


def eval_image_transform(cfg: RunConfig, *, crop: bool = True) -> EvalImageTransform:
    """The evaluation transform of real images: resize the shorter side to ``data.image_size`` and
    centre-crop (``crop=False``: squash the whole image), normalised as in training. An image already
    of that size is only normalised."""
    return EvalImageTransform(cfg.data.image_size, crop=crop, **_mean_std(cfg))


class _Subset(torch.utils.data.Subset):
    """A ``Subset`` that keeps the dataset's skip counts and passes ``set_epoch`` on."""

    def __init__(self, dataset: Any, indices: list[int]) -> None:
        super().__init__(dataset, indices)
        self.skipped = dataset.skipped

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


def build_tokenizer(cfg: RunConfig) -> Any:
    """Word-level tokenizer of the shapes grammar, or a local Hugging Face tokenizer.

    Raises ``ValueError`` naming the config field ``data.tokenizer`` when that folder does not hold
    a usable tokenizer (see :class:`maskmm.data.HFTokenizer` for what it must contain).
    """
    if cfg.data.tokenizer:
        from maskmm.data.hf_tokenizer import HFTokenizer

        try:
            return HFTokenizer(cfg.data.tokenizer)
        except ValueError as e:
            raise ValueError(f"config field 'data.tokenizer': {e}") from e
    if cfg.data.kind == "shapes":
        return WordTokenizer(shapes_config(cfg))
    raise ValueError(
        f"config field 'data.tokenizer' (a local tokenizer folder) is required with "
        f"data.kind={cfg.data.kind!r}"
    )


def build_train_dataset(cfg: RunConfig) -> torch.utils.data.Dataset:
    """The training split of the configured data.

    With ``data.kind: json``, unreadable annotations or a dataset in which no record is usable (for
    example a wrong ``data.image_root``) raise ``ValueError`` naming the config fields and files; with
    ``data.kind: shards``, a pattern that matches no file or a missing shard raise ``ValueError``
    naming ``data.shards``. Records skipped while loading are in the returned dataset's ``skipped``
    counter; those skipped while reading reach the batches (see :mod:`maskmm.data.skips`).

    Augmentation draws come from per-item generators seeded with ``(data.seed, epoch, index)``, so a
    resumed run augments as the uninterrupted one (the JSON dataset learns the epoch from
    ``set_epoch``; the shard stream knows its epochs). A shard stream is built for
    ``train.num_workers`` ``DataLoader`` workers and this process's DDP rank.
    """
    if cfg.data.kind == "shapes":
        return ShapesDataset(
            "train",
            cfg.data.train_size,
            seed=cfg.data.seed,
            config=shapes_config(cfg),
            transform=image_transform(cfg),
        )
    transform = train_image_transform(cfg)
    seed = cfg.data.seed if cfg.data.train_transform != "none" else None
    if cfg.data.kind == "shards":
        try:
            return ShardStream(
                cfg.data.shards,
                seed=cfg.data.seed,
                num_workers=cfg.train.num_workers,
                transform=transform,
                transform_seed=seed,
                image_size=cfg.data.image_size,
            )
        except ValueError as e:
            raise ValueError(f"config field 'data.shards': {e}") from e
    try:
        ds = JsonCaptionDataset(
            cfg.data.ann_file,
            cfg.data.image_root,
            image_size=cfg.data.image_size,
            transform=transform,
            transform_seed=seed,
        )
    except ValueError as e:
        raise ValueError(f"config fields 'data.ann_file' / 'data.image_root': {e}") from e
    n = cfg.data.train_size
    if 0 < n < len(ds):  # a random subset of n pairs, drawn with data.seed
        keep = torch.randperm(len(ds), generator=torch.Generator().manual_seed(cfg.data.seed))[:n]
        return _Subset(ds, sorted(keep.tolist()))
    return ds


def build_collate(cfg: RunConfig, tokenizer: Any) -> ImageTextCollator | StreamCollator:
    """``maskmm.data.ImageTextCollator``: pads text to the batch's longest caption, or always to
    ``data.max_text_len`` with ``train.compile`` (static shapes); with ``data.pair_facts`` the batches
    carry fact ids (:mod:`maskmm.data.facts`). With ``data.kind: shards`` it is
    wrapped in a :class:`~maskmm.data.shards.StreamCollator`: batches also carry
    ``"stream/position"``, which ``ShardStream.observe`` removes."""
    padding = "max_length" if cfg.train.compile else "longest"
    collate = ImageTextCollator(tokenizer, cfg.data.max_text_len, padding, facts=cfg.data.pair_facts)
    return StreamCollator(collate) if cfg.data.kind == "shards" else collate
