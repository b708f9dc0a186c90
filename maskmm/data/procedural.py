"""The built-in image-caption dataset: procedurally rendered coloured shapes.

Nothing is stored or downloaded: item ``i`` of a split is generated from
``(seed, split, i)`` when it is read, so the same index always yields the same
image and caption, on any machine and in any worker process.

Item layout (a ``dict``, shared with the real-data readers):

- ``image``: ``float32 [3, S, S]`` in ``[0, 1]``
- ``caption``: ``str``
- ``image_id``, ``index``: ``int`` (equal here: every index is its own image)
- ``boxes``: ``float32 [n, 4]`` object boxes ``(x0, y0, x1, y1)`` in pixels, in mention order
- ``phrase_spans``: ``int64 [n, 2]`` word span ``(start, end)`` of the noun phrase naming each box
- ``scene``: the :class:`~maskmm.data.scenes.Scene` (metadata for distractors and grounding)
- ``image_facts``, ``caption_facts``: ``frozenset`` of the facts true of the scene and of the facts
  its caption asserts (:mod:`maskmm.data.grammar`), after the transform; the collator turns them into
  the false-negative relation of the batch (:mod:`maskmm.data.facts`)
- ``alpha`` (only with ``return_alpha=True``): ``float32 [n, S, S]`` per-object coverage
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from .grammar import spec_facts
from .raster import render_objects
from .scenes import Scene, ScenePlanner
from .seeding import item_generator
from .vocab import ShapesConfig

__all__ = ["DEFAULT_LENGTHS", "ShapesDataset", "render_scene"]

#: Default number of items per split.
DEFAULT_LENGTHS: dict[str, int] = {"train": 50_000, "val": 1_000, "heldout": 1_000}


def render_scene(
    scene: Scene, config: ShapesConfig, *, return_alpha: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Render ``scene``: ``image float32 [3, S, S]`` and optionally coverage ``float32 [n, S, S]``."""
    s = scene.image_size
    objs = [(o.shape, config.colours[o.colour], o.cx * s, o.cy * s, o.radius * s) for o in scene.objects]
    image, alphas = render_objects(s, scene.background, objs, return_alpha=return_alpha)
    alpha = None
    if alphas is not None:
        alpha = torch.from_numpy(np.stack(alphas) if alphas else np.zeros((0, s, s), np.float32))
    return torch.from_numpy(image), alpha


class ShapesDataset(Dataset):
    """Map-style dataset of procedurally generated shape scenes and their captions.

    Args:
        split: ``"train"``, ``"val"`` (same distribution, other random stream) or ``"heldout"``
            (every scene holds a ``(colour, shape)`` pair never generated in train/val).
        length: number of items; default from :data:`DEFAULT_LENGTHS`.
        seed: non-negative int mixed into every item's random stream.
        config: generation parameters (image size, vocabulary, jitter, held-out pairs).
        transform: optional callable ``transform(item, generator=...) -> item`` (see
            :mod:`maskmm.data.transforms`); a horizontal flip must swap caption words and
            mirror the scene (``RandomHorizontalFlip`` does).
        transform_seed: when set, each item's transform gets a generator seeded from
            ``(transform_seed, epoch, index)`` (see :meth:`set_epoch`), making augmentation
            reproducible regardless of worker count; when ``None`` transforms use the global RNG.
        return_alpha: include per-object coverage maps under ``"alpha"``.

    Works with ``torch.utils.data.DistributedSampler`` as any map-style dataset.
    """

    def __init__(
        self,
        split: str = "train",
        length: int | None = None,
        *,
        seed: int = 0,
        config: ShapesConfig | None = None,
        transform: Callable | None = None,
        transform_seed: int | None = None,
        return_alpha: bool = False,
    ) -> None:
        if config is None:
            config = ShapesConfig()
        if not isinstance(config, ShapesConfig):
            raise TypeError(f"config must be a ShapesConfig, got {type(config).__name__}")
        self.planner = ScenePlanner(config, split, seed)
        if length is None:
            length = DEFAULT_LENGTHS[split]
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ValueError(f"length must be a non-negative int, got {length!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
        self.config, self.split, self.seed, self.length = config, split, seed, length
        self.transform, self.transform_seed, self.return_alpha = transform, transform_seed, return_alpha
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch mixed into per-item transform seeds (call it as for ``DistributedSampler``)."""
        self.epoch = int(epoch)

    def _check_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        index = int(index)
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of length {self.length}")
        return index

    def scene(self, index: int) -> Scene:
        """The scene (objects, caption spec) of item ``index`` without rendering it."""
        return self.planner.scene(self._check_index(index))

    def captions(self, index: int, k: int = 5) -> list[str]:
        """Up to ``k`` distinct true captions of item ``index``, its own caption first."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        index = self._check_index(index)
        return [s.text for s in self.planner.paraphrases(self.planner.scene(index), index, k)]

    def __getitem__(self, index: int) -> dict:
        index = self._check_index(index)
        scene = self.planner.scene(index)
        image, alpha = render_scene(scene, self.config, return_alpha=self.return_alpha)
        item = {
            "image": image,
            "caption": scene.caption,
            "image_id": index,
            "index": index,
            "boxes": torch.from_numpy(scene.boxes()),
            "phrase_spans": torch.from_numpy(scene.phrase_spans()),
            "scene": scene,
        }
        if alpha is not None:
            item["alpha"] = alpha
        if self.transform is not None:
            gen = (
                None
                if self.transform_seed is None
                else item_generator(self.transform_seed, self.epoch, index)
            )
            item = self.transform(item, generator=gen)
        scene = item.get("scene", scene)  # after the transform: a flip mirrors the scene and its caption
        item["image_facts"] = scene.facts
        item["caption_facts"] = spec_facts(scene.spec)
        return item
