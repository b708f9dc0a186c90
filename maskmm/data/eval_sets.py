"""Evaluation sets: image-text retrieval (R@K) and fine-grained caption discrimination."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .distractors import DISTRACTOR_ATTRIBUTES, distractor_specs
from .grammar import spec_facts
from .procedural import ShapesDataset

__all__ = ["FineGrainedSet", "RetrievalSet", "build_fine_grained_set", "build_retrieval_set"]


@dataclass
class RetrievalSet:
    """``N`` images and ``T`` texts with their ground truth.

    Attributes:
        images: ``float [N, 3, H, W]``.
        texts: ``T`` captions.
        image_ids: ``int64 [N]``.
        txt2img: ``int64 [T]``: the image each text was written for.
        positives: ``bool [N, T]``: ``True`` where the text is a correct description of the image.
            Real data: the text was written for the image. Built-in data: the caption is *true*
            of the image (captions often fit several generated images; counting those as misses
            would punish correct retrievals).
    """

    images: torch.Tensor
    texts: list[str]
    image_ids: torch.Tensor
    txt2img: torch.Tensor
    positives: torch.Tensor

    @property
    def img2txt(self) -> list[list[int]]:
        """Per image, the indices of the texts written for it."""
        out: list[list[int]] = [[] for _ in range(self.images.shape[0])]
        for t, i in enumerate(self.txt2img.tolist()):
            out[i].append(t)
        return out


def _indices(dataset, num_images: int | None, indices: Sequence[int] | None) -> list[int]:
    if indices is not None:
        return [int(i) for i in indices]
    n = len(dataset)
    if num_images is None:
        return list(range(n))
    if isinstance(num_images, bool) or not isinstance(num_images, int) or not 0 < num_images <= n:
        raise ValueError(f"num_images must be an int in [1, {n}], got {num_images!r}")
    return list(range(num_images))


def build_retrieval_set(
    dataset,
    num_images: int | None = None,
    *,
    captions_per_image: int = 5,
    indices: Sequence[int] | None = None,
) -> RetrievalSet:
    """Collect a retrieval benchmark from a dataset.

    Args:
        dataset: a :class:`ShapesDataset` (each image gets up to ``captions_per_image`` distinct
            true paraphrases), or any dataset whose items carry ``caption`` as a ``str`` or a list of
            ``str`` (e.g. ``JsonCaptionDataset(..., expand_captions=False)``; all captions kept).
        num_images: the first ``num_images`` items (default: all); or give ``indices``.
        captions_per_image: paraphrases per built-in image.
    """
    if (
        isinstance(captions_per_image, bool)
        or not isinstance(captions_per_image, int)
        or captions_per_image < 1
    ):
        raise ValueError(f"captions_per_image must be a positive int, got {captions_per_image!r}")
    idx = _indices(dataset, num_images, indices)
    if not idx:
        raise ValueError("the retrieval set needs at least one image")
    images, texts, owners, image_ids, specs = [], [], [], [], []
    shapes = isinstance(dataset, ShapesDataset)
    fact_index: dict[tuple, set[int]] = {}
    for n, i in enumerate(idx):
        item = dataset[i]
        images.append(item["image"])
        image_ids.append(int(item["image_id"]))
        if shapes:
            scene = item["scene"]
            own = dataset.planner.paraphrases(scene, i, captions_per_image)
            specs.extend(own)
            caps = [s.text for s in own]
            for fact in scene.facts:
                fact_index.setdefault(fact, set()).add(n)
        else:
            caps = [item["caption"]] if isinstance(item["caption"], str) else list(item["caption"])
        texts.extend(caps)
        owners.extend([n] * len(caps))
    txt2img = torch.tensor(owners, dtype=torch.long)
    positives = torch.zeros(len(idx), len(texts), dtype=torch.bool)
    positives[txt2img, torch.arange(len(texts))] = True
    for t, spec in enumerate(specs):
        holders = set.intersection(*(fact_index.get(f, set()) for f in spec_facts(spec)))
        positives[sorted(holders), t] = True
    return RetrievalSet(
        torch.stack(images), texts, torch.tensor(image_ids, dtype=torch.long), txt2img, positives
    )


@dataclass
class FineGrainedSet:
    """Images with their true caption and one single-attribute distractor per attribute.

    Attributes:
        images: ``float [N, 3, H, W]``; image_ids: ``int64 [N]``.
        captions: the ``N`` true captions.
        distractors: attribute -> ``N`` captions false for the image (``None`` where the caption
            states no such attribute, e.g. no relation for one object).
    """

    images: torch.Tensor
    image_ids: torch.Tensor
    captions: list[str]
    distractors: dict[str, list[str | None]]


def build_fine_grained_set(
    dataset: ShapesDataset,
    num_images: int | None = None,
    *,
    attributes: Sequence[str] = DISTRACTOR_ATTRIBUTES,
    seed: int = 0,
    indices: Sequence[int] | None = None,
) -> FineGrainedSet:
    """Pick, for each image and attribute, one distractor (uniformly, from ``(seed, index)``)."""
    if not isinstance(dataset, ShapesDataset):
        raise TypeError(
            f"dataset must be a ShapesDataset (distractors need scene metadata), got {type(dataset).__name__}"
        )
    bad = [a for a in attributes if a not in DISTRACTOR_ATTRIBUTES]
    if bad:
        raise ValueError(f"attributes must be drawn from {DISTRACTOR_ATTRIBUTES}, got {bad}")
    idx = _indices(dataset, num_images, indices)
    if not idx:
        raise ValueError("the fine-grained set needs at least one image")
    images, ids, captions = [], [], []
    distractors: dict[str, list[str | None]] = {a: [] for a in attributes}
    for i in idx:
        item = dataset[i]
        images.append(item["image"])
        ids.append(int(item["image_id"]))
        captions.append(item["caption"])
        cands = distractor_specs(item["scene"], dataset.config)
        rng = np.random.default_rng([seed, i])
        for a in attributes:
            lst = cands[a]
            distractors[a].append(lst[int(rng.integers(len(lst)))].text if lst else None)
    return FineGrainedSet(torch.stack(images), torch.tensor(ids, dtype=torch.long), captions, distractors)
