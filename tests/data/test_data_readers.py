"""Real-data readers (ALBEF JSON, tar shards) with broken records, and the collator."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from maskmm.data import (
    ImageTextCollator,
    JsonCaptionDataset,
    ShapesDataset,
    TarShardDataset,
    WordTokenizer,
    expand_shards,
)

Image = pytest.importorskip("PIL.Image", reason="the real-data readers need Pillow")


def _png_bytes(seed: int, size=(6, 5)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _png_tensor(data: bytes) -> torch.Tensor:
    arr = np.array(Image.open(io.BytesIO(data)).convert("RGB"))
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255


@pytest.fixture
def albef_dir(tmp_path):
    (tmp_path / "img").mkdir()
    for k in range(4):
        (tmp_path / "img" / f"{k}.png").write_bytes(_png_bytes(k))
    (tmp_path / "img" / "broken.png").write_bytes(b"not an image at all")
    records = [
        {"image": "img/0.png", "caption": "a photo of zero", "image_id": "coco_0"},
        {"image": "img/1.png", "caption": ["one", "  ", "uno"], "image_id": "coco_1"},
        {"image": "img/missing.png", "caption": "gone", "image_id": "coco_9"},
        {"image": "img/2.png", "caption": "   ", "image_id": "coco_2"},
        {"image": "img/broken.png", "caption": "cannot decode", "image_id": "coco_b"},
        {"caption": "no image key"},
        {"image": "img/3.png", "caption": 5},
        "not a record",
        {"image": "img/3.png", "caption": "three"},
        {"image": "img/0.png", "caption": "zero again", "image_id": "coco_0"},
    ]
    (tmp_path / "ann.json").write_text(json.dumps(records))
    return tmp_path


def test_json_reader_skips_and_counts_broken_records(albef_dir):
    ds = JsonCaptionDataset(albef_dir / "ann.json", albef_dir)
    assert dict(ds.skipped) == {"missing_file": 1, "empty_caption": 1, "bad_record": 3}
    # images in order of first appearance; one item per caption
    assert ds.image_keys == ["coco_0", "coco_1", "coco_b", "img/3.png"]
    caps = [ds.image_captions[i][j] for i, j in ds.entries]
    assert caps == ["a photo of zero", "zero again", "one", "uno", "cannot decode", "three"]
    it = ds[0]
    assert it["caption"] == "a photo of zero" and it["image_id"] == 0 and it["index"] == 0
    torch.testing.assert_close(it["image"], _png_tensor(_png_bytes(0)))
    # the undecodable image is replaced by the next item and counted once
    it = ds[4]
    assert it["caption"] == "three" and it["index"] == 5 and it["image_id"] == 3
    assert ds.skipped["bad_image"] == 1
    ds[4]
    assert ds.skipped["bad_image"] == 1
    items = [ds[i] for i in range(len(ds))]
    assert [x["image_id"] for x in items] == [0, 0, 1, 1, 3, 3]
    grouped = JsonCaptionDataset(albef_dir / "ann.json", albef_dir, expand_captions=False)
    assert len(grouped) == 4 and grouped[1]["caption"] == ["one", "uno"]


def test_json_reader_errors(albef_dir, tmp_path):
    (tmp_path / "obj.json").write_text(json.dumps({"image": "x"}))
    with pytest.raises(ValueError, match="JSON list"):
        JsonCaptionDataset(tmp_path / "obj.json", tmp_path)
    with pytest.raises(ValueError, match="ann_files"):
        JsonCaptionDataset([], tmp_path)
    with pytest.raises(ValueError, match="max_retries"):
        JsonCaptionDataset(albef_dir / "ann.json", albef_dir, max_retries=-1)
    only_bad = tmp_path / "bad.json"
    only_bad.write_text(json.dumps([{"image": "img/broken.png", "caption": "x"}]))
    ds = JsonCaptionDataset(only_bad, albef_dir)
    with pytest.raises(RuntimeError, match="no decodable image"):
        ds[0]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _write_shard(path, samples) -> None:
    with tarfile.open(path, "w") as tar:
        for key, files in samples:
            for ext, data in files.items():
                _add(tar, f"{key}.{ext}", data)


@pytest.fixture
def shard_dir(tmp_path):
    good = lambda k: {"png": _png_bytes(k), "txt": f"caption {k}".encode()}
    _write_shard(
        tmp_path / "s-000.tar",
        [
            ("a/000", good(0)),
            (
                "a/001",
                {"png": _png_bytes(1), "json": json.dumps({"caption": "from json", "image_id": 77}).encode()},
            ),
            ("a/002", {"txt": b"no image"}),
            ("a/003", {"png": _png_bytes(3), "txt": b"  "}),
            ("a/004", {"png": b"garbage", "txt": b"bad image"}),
            ("a/005", good(5)),
        ],
    )
    _write_shard(tmp_path / "s-001.tar", [(f"b/{k:03d}", good(10 + k)) for k in range(5)])
    # a truncated shard: two complete samples, then the file is cut in the middle of the third
    _write_shard(tmp_path / "full.tar", [(f"c/{k:03d}", good(20 + k)) for k in range(3)])
    raw = (tmp_path / "full.tar").read_bytes()
    with tarfile.open(tmp_path / "full.tar") as t:
        cut = t.getmember("c/002.png").offset_data + 10
    (tmp_path / "s-002.tar").write_bytes(raw[:cut])
    (tmp_path / "full.tar").unlink()
    return tmp_path


def test_tar_reader_skips_and_counts(shard_dir):
    ds = TarShardDataset(str(shard_dir / "s-{000..002}.tar"))
    items = list(ds)
    caps = [it["caption"] for it in items]
    assert caps == [
        "caption 0",
        "from json",
        "caption 5",
        *[f"caption {10 + k}" for k in range(5)],
        "caption 20",
        "caption 21",
    ]
    assert dict(ds.skipped) == {"missing_image": 1, "empty_caption": 1, "bad_image": 1, "bad_shard": 1}
    assert items[1]["image_id"] == 77 and isinstance(items[0]["image_id"], int)
    assert items[0]["index"] == 0 and items[2]["index"] == 5 and items[3]["index"] == (1 << 32)
    torch.testing.assert_close(items[3]["image"], _png_tensor(_png_bytes(10)))
    assert len({it["index"] for it in items}) == len(items)


@pytest.mark.parametrize("world,workers", [(2, 1), (1, 2), (2, 2), (4, 1)])
def test_tar_reader_partitions_over_ranks_and_workers(shard_dir, world, workers):
    shards = [str(shard_dir / f"s-00{k}.tar") for k in range(3)]
    everything = sorted(it["caption"] for it in TarShardDataset(shards))
    seen = []
    for rank in range(world):
        ds = TarShardDataset(shards, rank=rank, world_size=world)
        if workers == 1:
            seen.extend(it["caption"] for it in ds)
        else:
            loader = DataLoader(ds, batch_size=None, num_workers=workers)
            seen.extend(it["caption"] for it in loader)
    assert sorted(seen) == everything  # each sample exactly once


def test_tar_reader_shuffles_shards_per_epoch(shard_dir):
    shards = [str(shard_dir / f"s-00{k}.tar") for k in (0, 1)]
    ds = TarShardDataset(shards, shuffle_shards=True, seed=0)
    orders = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        orders.add(next(iter(ds))["caption"])
    assert orders == {"caption 0", "caption 10"}
    ds.set_epoch(2)
    assert [x["caption"] for x in ds] == [x["caption"] for x in ds]


def test_tar_reader_errors_and_shard_patterns(tmp_path):
    assert expand_shards("x-{08..11}.tar") == ["x-08.tar", "x-09.tar", "x-10.tar", "x-11.tar"]
    assert expand_shards("{0..1}-{a}") == ["0-{a}", "1-{a}"]
    with pytest.raises(ValueError, match="rank"):
        TarShardDataset(["a.tar"], rank=2, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        TarShardDataset(["a.tar"], rank=0)
    with pytest.raises(ValueError, match=r"shard files do not exist, e\.g\. '.*missing\.tar'"):
        TarShardDataset([str(tmp_path / "missing.tar")])


def test_collator_shapes_and_values():
    ds = ShapesDataset("train", 10, seed=0)
    tok = WordTokenizer()
    items = [ds[i] for i in (3, 1, 4, 0)]
    batch = ImageTextCollator(tok, max_len=12)(items)
    assert batch["images"].shape == (4, 3, 64, 64) and batch["images"].dtype == torch.float32
    assert torch.equal(batch["images"][1], items[1]["image"])
    ref = tok([it["caption"] for it in items], 12)
    assert torch.equal(batch["input_ids"], ref.input_ids) and torch.equal(batch["text_valid"], ref.valid)
    assert torch.equal(batch["word_ids"], ref.word_ids)
    assert batch["input_ids"].shape[1] <= 12
    assert batch["image_ids"].tolist() == [3, 1, 4, 0] and batch["index"].dtype == torch.long
    m = max(len(it["scene"].objects) for it in items)
    assert batch["boxes"].shape == (4, m, 4) and batch["phrase_spans"].shape == (4, m, 2)
    for i, it in enumerate(items):
        n = len(it["scene"].objects)
        assert batch["box_valid"][i].tolist() == [True] * n + [False] * (m - n)
        assert torch.equal(batch["boxes"][i, :n], it["boxes"])
        assert batch["boxes"][i, n:].eq(0).all()
    fixed = ImageTextCollator(tok, max_len=40, padding="max_length")(items)
    assert fixed["input_ids"].shape == (4, 40)


def test_collator_bad_input():
    tok = WordTokenizer()
    col = ImageTextCollator(tok, 8)
    good = {"image": torch.zeros(3, 4, 4), "caption": "a", "image_id": 0, "index": 0}
    with pytest.raises(ValueError, match="non-empty"):
        col([])
    with pytest.raises(TypeError, match=r"items\[1\]\['caption'\]"):
        col([good, {**good, "caption": ["a", "b"]}])
    with pytest.raises(ValueError, match=r"items\[1\]\['image'\] has shape \[3, 5, 4\]"):
        col([good, {**good, "image": torch.zeros(3, 5, 4)}])
    with pytest.raises(TypeError, match=r"items\[0\]\['image'\]"):
        col([{**good, "image": torch.zeros(3, 4, 4, dtype=torch.uint8)}])
    with pytest.raises(TypeError, match="mapping"):
        col([{"image": torch.zeros(3, 4, 4)}])
    with pytest.raises(ValueError, match="max_len"):
        ImageTextCollator(tok, 1)
    with pytest.raises(TypeError, match="tokenizer"):
        ImageTextCollator("tok", 8)


def test_readers_resize_to_image_size_for_collation(albef_dir, shard_dir):
    from maskmm.data.transforms import resize

    ds = JsonCaptionDataset(albef_dir / "ann.json", albef_dir, image_size=8)
    it = ds[0]
    assert it["image"].shape == (3, 8, 8)
    torch.testing.assert_close(it["image"], resize(_png_tensor(_png_bytes(0)), 8))
    batch = ImageTextCollator(WordTokenizer.from_texts(ds.image_captions[0]), 6)([ds[i] for i in range(4)])
    assert batch["images"].shape == (4, 3, 8, 8) and batch["image_ids"].tolist() == [0, 0, 1, 1]
    tar = TarShardDataset(str(shard_dir / "s-001.tar"), image_size=(4, 6))
    assert {tuple(x["image"].shape) for x in tar} == {(3, 4, 6)}
    with pytest.raises(ValueError, match="image_size"):
        JsonCaptionDataset(albef_dir / "ann.json", albef_dir, image_size=0)
