"""Data of a run, for every recipe: tokenizer, training set and collate function (``data`` section).

The built-in data is :class:`maskmm.data.procedural.ShapesDataset`; real data (``data.kind:
json``) uses ALBEF-style annotations through ``maskmm.data`` readers with a Hugging Face
tokenizer from a local folder (``data.tokenizer``).
"""

from __future__ import annotations

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

from .config import RunConfig

__all__ = [
    "build_collate",
    "build_tokenizer",
    "build_train_dataset",
    "image_transform",
    "shapes_config",
]


def shapes_config(cfg: RunConfig) -> ShapesConfig:
    return ShapesConfig(image_size=cfg.data.image_size)


def image_transform(cfg: RunConfig) -> Normalize | None:
    """Per-channel normalisation of the ``[0, 1]`` images (``data.normalize``), or ``None``."""
    return named_normalize(cfg.data.normalize)


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
        "config field 'data.tokenizer' (a local tokenizer folder) is required with data.kind='json'"
    )


def build_train_dataset(cfg: RunConfig) -> torch.utils.data.Dataset:
    """The training split of the configured data.

    With ``data.kind: json``, unreadable annotations or a dataset in which no record is usable (for
    example a wrong ``data.image_root``) raise ``ValueError`` naming the config fields and files.
    Records skipped while loading are in the returned dataset's ``skipped`` counter; those skipped
    while reading reach the batches (see :mod:`maskmm.data.skips`).
    """
    if cfg.data.kind == "shapes":
        return ShapesDataset(
            "train",
            cfg.data.train_size,
            seed=cfg.data.seed,
            config=shapes_config(cfg),
            transform=image_transform(cfg),
        )
    try:
        ds = JsonCaptionDataset(
            cfg.data.ann_file,
            cfg.data.image_root,
            image_size=cfg.data.image_size,
            transform=image_transform(cfg),
        )
    except ValueError as e:
        raise ValueError(f"config fields 'data.ann_file' / 'data.image_root': {e}") from e
    n = cfg.data.train_size
    if 0 < n < len(ds):  # a random subset of n pairs, drawn with data.seed
        keep = torch.randperm(len(ds), generator=torch.Generator().manual_seed(cfg.data.seed))[:n]
        subset = torch.utils.data.Subset(ds, sorted(keep.tolist()))
        subset.skipped = ds.skipped  # type: ignore[attr-defined]
        return subset
    return ds


def build_collate(cfg: RunConfig, tokenizer: Any) -> ImageTextCollator:
    """``maskmm.data.ImageTextCollator``: pads text to the batch's longest caption, or always to
    ``data.max_text_len`` with ``train.compile`` (static shapes)."""
    padding = "max_length" if cfg.train.compile else "longest"
    return ImageTextCollator(tokenizer, cfg.data.max_text_len, padding)
