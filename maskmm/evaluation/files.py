"""Evaluation sets from the user's files, in ALBEF's layout.

- **Retrieval** (COCO 5k / Flickr 1k test files): a JSON list of ``{"image": path, "caption": [str, ...]}``
  (a single ``str`` is one caption); paths are relative to an image root (or absolute). Every caption
  is a positive of its own image only, so R@K counts an image -> text hit when any of the image's
  captions is in the top K (ALBEF's protocol).
- **Fine-grained** (optional): a JSON list of ``{"image": path, "caption": str, "distractors":
  {attribute: str | [str, ...]}}``: the true caption and captions that change one attribute; each
  distractor is scored against the true caption (accuracy per attribute).

Every file problem raises a ``ValueError`` naming the file: missing, not UTF-8, not JSON, a record
without an image or a caption, an image that cannot be read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from maskmm.data import JsonCaptionDataset, build_retrieval_set, named_normalize
from maskmm.data.images import decode_image
from maskmm.data.real_transforms import EvalImageTransform

from .builtin import EvalSet

__all__ = ["FineGrainedFile", "load_finegrained_file", "load_retrieval_file"]


def load_retrieval_file(
    path: str | os.PathLike, image_root: str | os.PathLike = "", *, image_size: int, normalize: str
) -> EvalSet:
    """The images and captions of an ALBEF-format retrieval file.

    Args:
        path: the JSON file; image_root: folder the image paths are relative to.
        image_size: the shorter side of each image is resized to ``image_size`` and the centre
            square cropped (images of that size are used as they are);
        normalize: the training normalisation (``"imagenet"``, ``"clip"``, ``"none"``).

    Returns an :class:`~maskmm.evaluation.builtin.EvalSet` whose ``positives [N, T]`` marks each
    caption's own image (``image_ids`` = the record index).
    """
    p = Path(path)
    try:
        ds = JsonCaptionDataset(
            p,
            image_root,
            expand_captions=False,
            transform=_eval_transform(image_size, normalize),
            max_retries=0,
        )
    except (ValueError, RuntimeError, OSError) as e:
        raise ValueError(f"test file {str(p)!r} cannot be used: {e}") from None
    skipped = {k: v for k, v in ds.skipped.items() if v}
    if skipped:
        raise ValueError(
            f"test file {str(p)!r}: {sum(skipped.values())} record(s) cannot be used ({skipped}); "
            "an evaluation set must be complete to be comparable"
        )
    try:
        rs = build_retrieval_set(ds, len(ds))
    except (ValueError, RuntimeError, OSError) as e:
        raise ValueError(f"test file {str(p)!r}: {e}") from None
    n = rs.images.shape[0]
    return EvalSet(
        images=rs.images,
        captions=list(rs.texts),
        image_ids=torch.arange(n),
        text_image_ids=rs.txt2img,
        positives=rs.positives,
        scenes=[],
    )


def _eval_transform(image_size: int, normalize: str) -> EvalImageTransform:
    norm = named_normalize(normalize)
    stats = {} if norm is None else {"mean": list(norm.mean), "std": list(norm.std)}
    return EvalImageTransform(image_size, **stats)


@dataclass
class FineGrainedFile:
    """``images [N, 3, H, W]``, the ``N`` true captions, and per attribute ``N`` lists of distractors."""

    images: torch.Tensor
    captions: list[str]
    distractors: dict[str, list[list[str]]]


def _read_json(p: Path) -> object:
    if not p.is_file():
        raise ValueError(f"fine-grained file {str(p)!r} does not exist")
    try:
        return json.loads(p.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        raise ValueError(f"fine-grained file {str(p)!r} is not UTF-8 text: {e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"fine-grained file {str(p)!r} is not valid JSON: {e}") from None


def load_finegrained_file(
    path: str | os.PathLike, image_root: str | os.PathLike = "", *, image_size: int, normalize: str
) -> FineGrainedFile:
    """The records of a fine-grained distractor file (see the module docstring)."""
    p = Path(path)
    records = _read_json(p)
    if not isinstance(records, list) or not records:
        raise ValueError(f"fine-grained file {str(p)!r} must hold a non-empty JSON list of records")
    transform = _eval_transform(image_size, normalize)
    images, captions = [], []
    attrs: dict[str, list[list[str]]] = {}
    for i, rec in enumerate(records):
        ok = (
            isinstance(rec, dict)
            and isinstance(rec.get("image"), str)
            and isinstance(rec.get("caption"), str)
        )
        if not ok or not isinstance(rec.get("distractors", {}), dict):
            raise ValueError(
                f"fine-grained file {str(p)!r}: record {i} must be "
                '{"image": str, "caption": str, "distractors": {attribute: str | [str]}}'
            )
        for a, v in rec.get("distractors", {}).items():
            vals = [v] if isinstance(v, str) else v
            if not isinstance(vals, list) or not all(isinstance(x, str) for x in vals):
                raise ValueError(
                    f"fine-grained file {str(p)!r}: record {i}, distractors[{a!r}] must be strings"
                )
            attrs.setdefault(a, [[] for _ in range(len(records))])[i] = vals
        img_path = Path(rec["image"]) if os.path.isabs(rec["image"]) else Path(image_root) / rec["image"]
        try:
            item = transform({"image": decode_image(img_path)})
        except Exception as e:
            raise ValueError(
                f"fine-grained file {str(p)!r}: record {i}: cannot read {str(img_path)!r}: {e}"
            ) from None
        images.append(item["image"])
        captions.append(rec["caption"])
    return FineGrainedFile(torch.stack(images), captions, attrs)
