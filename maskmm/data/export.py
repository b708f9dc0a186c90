"""Write a dataset in the formats real data comes in: ALBEF JSON with image files, WebDataset tar
shards (img2dataset's ``{key}.jpg|png / .txt / .json`` layout) and a Hugging Face tokenizer folder.

Used to try the real-data paths end to end on the built-in data (no download), and to hand the
built-in data to other code bases. Images are written as 8-bit PNG, so they read back as the
8-bit quantisation of the rendered images (exactly :func:`quantize_8bit` of them).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["export_albef_json", "export_tar_shards", "export_word_tokenizer", "quantize_8bit"]


def quantize_8bit(images: torch.Tensor) -> torch.Tensor:
    """``float [..., 3, H, W]`` in ``[0, 1]`` -> the same after a round trip through 8-bit image files."""
    return torch.round(images.clamp(0, 1) * 255).to(torch.uint8).to(torch.float32) / 255


def _png(image: torch.Tensor) -> bytes:
    from PIL import Image

    arr = (quantize_8bit(image) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def _items(
    dataset, indices: Sequence[int], captions_per_image: int
) -> list[tuple[int, torch.Tensor, list[str]]]:
    """``(index, image [3, H, W] in [0, 1], captions)`` of each index; built-in items give
    ``captions_per_image`` distinct true paraphrases (the first is the item's own caption)."""
    out = []
    for i in indices:
        item = dataset[i]
        image = item["image"]
        if "scene" in item and hasattr(dataset, "planner"):
            caps = [s.text for s in dataset.planner.paraphrases(item["scene"], i, captions_per_image)]
        else:
            caps = [item["caption"]] if isinstance(item["caption"], str) else list(item["caption"])
        out.append((i, image, caps[:captions_per_image]))
    return out


def export_albef_json(
    dataset,
    indices: Sequence[int],
    out_dir: str | os.PathLike,
    *,
    name: str,
    captions_per_image: int = 1,
) -> tuple[Path, Path]:
    """Write ``images/<name>_<index>.png`` and two ALBEF annotation files under ``out_dir``.

    ``dataset`` items must hold ``image`` in ``[0, 1]`` (no normalisation transform) and ``caption``.

    Returns ``(train_file, test_file)``: ``<name>_train.json`` with one record per (image, caption)
    (``{"image", "caption", "image_id"}``, ALBEF's pretraining layout) and ``<name>_test.json`` with one
    record per image (``{"image", "caption": [...]}``, ALBEF's retrieval layout). Paths are relative
    to ``out_dir`` (the image root).
    """
    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    train, test = [], []
    for i, image, caps in _items(dataset, indices, captions_per_image):
        rel = f"images/{name}_{i}.png"
        (root / rel).write_bytes(_png(image))
        train += [{"image": rel, "caption": c, "image_id": f"{name}_{i}"} for c in caps]
        test.append({"image": rel, "caption": caps})
    train_file, test_file = root / f"{name}_train.json", root / f"{name}_test.json"
    train_file.write_text(json.dumps(train, indent=1), encoding="utf-8")
    test_file.write_text(json.dumps(test, indent=1), encoding="utf-8")
    return train_file, test_file


def export_tar_shards(
    dataset,
    indices: Sequence[int],
    out_dir: str | os.PathLike,
    *,
    name: str,
    per_shard: int = 100,
) -> list[Path]:
    """Write WebDataset shards ``<name>-000000.tar, ...`` of ``per_shard`` samples: ``<key>.png`` (8-bit),
    ``<key>.txt`` (the caption) and ``<key>.json`` (``{"caption", "image_id"}``), img2dataset's layout."""
    if per_shard < 1:
        raise ValueError(f"per_shard must be >= 1, got {per_shard}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    items = _items(dataset, indices, 1)
    shards = []
    for s in range(0, len(items), per_shard):
        path = root / f"{name}-{s // per_shard:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for i, image, caps in items[s : s + per_shard]:
                key = f"{name}_{i:09d}"
                meta = json.dumps({"caption": caps[0], "image_id": f"{name}_{i}"}).encode()
                for suffix, data in ((".png", _png(image)), (".txt", caps[0].encode()), (".json", meta)):
                    info = tarfile.TarInfo(key + suffix)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        shards.append(path)
    return shards


def export_word_tokenizer(tokenizer, folder: str | os.PathLike) -> Path:
    """Write a word-level :class:`~maskmm.data.WordTokenizer` as a Hugging Face tokenizer folder
    (``tokenizer.json``: WordLevel model, whitespace pre-tokenizer, ``[CLS] $A [SEP]`` post-processor,
    the same ids). Needs the ``tokenizers`` package."""
    import tokenizers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = dict(tokenizer.vocab)
    inv = {i: t for t, i in vocab.items()}
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token=inv[tokenizer.unk_id]))
    core.normalizer = tokenizers.normalizers.Lowercase()
    core.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    cls, sep = inv[tokenizer.cls_id], inv[tokenizer.sep_id]
    core.post_processor = tokenizers.processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B {sep}",
        special_tokens=[(cls, tokenizer.cls_id), (sep, tokenizer.sep_id)],
    )
    core.save(str(folder / "tokenizer.json"))
    specials = {
        "cls_token": cls,
        "sep_token": sep,
        "pad_token": inv[tokenizer.pad_id],
        "mask_token": inv[tokenizer.mask_id],
        "unk_token": inv[tokenizer.unk_id],
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(specials), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({**specials, "tokenizer_class": "PreTrainedTokenizerFast", "do_lower_case": True}),
        encoding="utf-8",
    )
    return folder
