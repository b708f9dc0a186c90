"""Data for MAMO runs: tokenizer, training set, collate function and evaluation sets.

The built-in data is :class:`maskmm.data.procedural.ShapesDataset`; real data (``data.kind:
json``) uses ALBEF-style annotations through ``maskmm.data`` readers with a Hugging Face
tokenizer from a local folder (``data.tokenizer``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from maskmm.data import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageTextCollator,
    JsonCaptionDataset,
    Normalize,
    ShapesConfig,
    ShapesDataset,
    WordTokenizer,
    build_retrieval_set,
)

from .config import MAMOConfig

__all__ = [
    "EvalSet",
    "build_collate",
    "build_tokenizer",
    "build_train_dataset",
    "eval_dataset",
    "image_transform",
    "retrieval_set",
    "shapes_config",
]


def shapes_config(cfg: MAMOConfig) -> ShapesConfig:
    return ShapesConfig(image_size=cfg.data.image_size)


def image_transform(cfg: MAMOConfig) -> Normalize | None:
    """Per-channel normalisation of the ``[0, 1]`` images (``data.normalize``), or ``None``."""
    if cfg.data.normalize == "none":
        return None
    if cfg.data.normalize == "clip":
        return Normalize(CLIP_MEAN, CLIP_STD)
    return Normalize(IMAGENET_MEAN, IMAGENET_STD)


def build_tokenizer(cfg: MAMOConfig) -> Any:
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


def build_train_dataset(cfg: MAMOConfig) -> torch.utils.data.Dataset:
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
        return JsonCaptionDataset(
            cfg.data.ann_file,
            cfg.data.image_root,
            image_size=cfg.data.image_size,
            transform=image_transform(cfg),
        )
    except ValueError as e:
        raise ValueError(f"config fields 'data.ann_file' / 'data.image_root': {e}") from e


def build_collate(cfg: MAMOConfig, tokenizer: Any) -> ImageTextCollator:
    """``maskmm.data.ImageTextCollator``: pads text to the batch's longest caption, or always to
    ``data.max_text_len`` with ``train.compile`` (static shapes)."""
    padding = "max_length" if cfg.train.compile else "longest"
    return ImageTextCollator(tokenizer, cfg.data.max_text_len, padding)


@dataclass
class EvalSet:
    """``N`` images with one caption each, from :func:`maskmm.data.build_retrieval_set`.

    Attributes:
        images: ``[N, 3, H, W]``; captions: ``T`` strings; image_ids: ``long [N]``;
        text_image_ids: ``long [T]`` id of the image each caption was written for.
        positives: ``bool [N, T]`` caption ``t`` is true of image ``i`` (a caption can describe
            several generated scenes); ``image_ids`` vs ``text_image_ids`` gives the strict
            written-for relevance instead.
        scenes: the scene of each image (boxes and phrases for grounding).
    """

    images: torch.Tensor
    captions: list[str]
    image_ids: torch.Tensor
    text_image_ids: torch.Tensor
    positives: torch.Tensor
    scenes: list[Any]


def eval_dataset(cfg: MAMOConfig, split: str, n: int) -> ShapesDataset:
    return ShapesDataset(
        split, n, seed=cfg.data.seed, config=shapes_config(cfg), transform=image_transform(cfg)
    )


def retrieval_set(cfg: MAMOConfig, split: str, n: int) -> EvalSet:
    """The first ``n`` items of ``split`` of the built-in data, one caption per image."""
    ds = eval_dataset(cfg, split, n)
    rs = build_retrieval_set(ds, n, captions_per_image=1)
    return EvalSet(
        images=rs.images,
        captions=list(rs.texts),
        image_ids=rs.image_ids,
        text_image_ids=rs.image_ids[rs.txt2img],
        positives=rs.positives,
        scenes=[ds.scene(i) for i in range(n)],
    )
