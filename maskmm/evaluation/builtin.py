"""The built-in data's evaluation sets (retrieval, fine-grained, grounding) for a run's ``data`` section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from maskmm.data import ShapesConfig, ShapesDataset, build_retrieval_set, named_normalize

__all__ = ["EvalSet", "eval_dataset", "retrieval_set"]


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


def eval_dataset(cfg: Any, split: str, n: int) -> ShapesDataset:
    return ShapesDataset(
        split,
        n,
        seed=cfg.data.seed,
        config=ShapesConfig(image_size=cfg.data.image_size),
        transform=named_normalize(cfg.data.normalize),
    )


def retrieval_set(cfg: Any, split: str, n: int) -> EvalSet:
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
