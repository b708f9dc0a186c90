"""Data for masked multimodal pretraining.

- Built-in procedural image-caption data (no download): :class:`ShapesDataset`,
  :class:`ShapesConfig`, :func:`make_distractors`, evaluation set builders.
- Real data: :class:`JsonCaptionDataset` (ALBEF-style JSON + image root) and
  :class:`TarShardDataset` (WebDataset-style tar shards).
- Tokenizers (:class:`WordTokenizer`, :class:`HFTokenizer`) and :class:`ImageTextCollator`.
- Tensor image transforms (:mod:`maskmm.data.transforms`) and seeding helpers.
- Skip counts of the real-data readers (:mod:`maskmm.data.skips`): :data:`SKIP_REASONS`,
  :func:`pop_skip_counts`, :func:`skip_counts`.

Items are dicts with ``image`` (``float32 [3, H, W]`` in ``[0, 1]``), ``caption``,
``image_id`` and ``index`` (the real-data readers add ``skipped``); the collator turns a list of
them into a batch.
"""

from __future__ import annotations

from .collate import ImageTextCollator
from .distractors import DISTRACTOR_ATTRIBUTES, distractor_specs, make_distractors
from .eval_sets import FineGrainedSet, RetrievalSet, build_fine_grained_set, build_retrieval_set
from .grammar import CaptionSpec, Mention
from .hf_tokenizer import HFTokenizer
from .json_dataset import JsonCaptionDataset
from .procedural import ShapesDataset, render_scene
from .real_transforms import EvalImageTransform, RandAugment, TrainImageTransform
from .scenes import Scene, SceneObject
from .seeding import item_generator, seed_worker
from .shards import ShardStream, StreamCollator, resolve_shards
from .skips import SKIP_KEY_PREFIX, SKIP_REASONS, pop_skip_counts, skip_counts
from .tar_dataset import TarShardDataset, expand_shards
from .tokenizers import TokenizedText, WordTokenizer
from .transforms import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    named_normalize,
)
from .vocab import ShapesConfig

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "DISTRACTOR_ATTRIBUTES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SKIP_KEY_PREFIX",
    "SKIP_REASONS",
    "CaptionSpec",
    "Compose",
    "EvalImageTransform",
    "FineGrainedSet",
    "HFTokenizer",
    "ImageTextCollator",
    "JsonCaptionDataset",
    "Mention",
    "Normalize",
    "RandAugment",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Resize",
    "RetrievalSet",
    "Scene",
    "SceneObject",
    "ShapesConfig",
    "ShapesDataset",
    "ShardStream",
    "StreamCollator",
    "TarShardDataset",
    "TokenizedText",
    "TrainImageTransform",
    "WordTokenizer",
    "build_fine_grained_set",
    "build_retrieval_set",
    "distractor_specs",
    "expand_shards",
    "item_generator",
    "make_distractors",
    "named_normalize",
    "pop_skip_counts",
    "render_scene",
    "resolve_shards",
    "seed_worker",
    "skip_counts",
]
