"""Broken real data: every bad record is skipped and counted (also through loader workers), and
every bad file or field is named in the error."""

from __future__ import annotations

import gzip
import io
import json
import tarfile

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from maskmm.data import (
    SKIP_KEY_PREFIX,
    SKIP_REASONS,
    ImageTextCollator,
    JsonCaptionDataset,
    TarShardDataset,
    WordTokenizer,
    pop_skip_counts,
    skip_counts,
)
from maskmm.data.tokenizers import clean_text, is_valid_text
from maskmm.training.grads import split_microbatches

Image = pytest.importorskip("PIL.Image", reason="the real-data readers need Pillow")

# JSON text (not Python) holding lone surrogate escapes, as broken exports write them
LONE_SURROGATE_JSON = '"a red \\ud800 circle"'


def _png(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _tar_bytes(samples) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for key, files in samples:
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _member_offset(raw: bytes, name: str) -> int:
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return tar.getmember(name).offset


def _good(k: int) -> dict[str, bytes]:
    return {"png": _png(k), "txt": f"caption {k}".encode()}


def _total(dicts) -> dict[str, int]:
    out = dict.fromkeys(SKIP_REASONS, 0)
    for d in dicts:
        for k, v in d.items():
            out[k] += v
    return {k: v for k, v in out.items() if v}


# --------------------------------------------------------------------------- 1. text that is not Unicode


def test_json_reader_skips_captions_that_are_not_unicode_text(tmp_path):
    for k in range(2):
        (tmp_path / f"{k}.png").write_bytes(_png(k))
    (tmp_path / "ann.json").write_text(
        "["
        f'{{"image": "0.png", "caption": {LONE_SURROGATE_JSON}}},'
        '{"image": "1.png", "caption": ["a blue \\udfff square", "a blue square"]}'
        "]",
        encoding="utf-8",
    )
    ds = JsonCaptionDataset(tmp_path / "ann.json", tmp_path)
    assert dict(ds.skipped) == {"bad_text": 2}
    assert [ds[i]["caption"] for i in range(len(ds))] == ["a blue square"]


def test_tar_reader_skips_captions_that_are_not_unicode_text(tmp_path):
    raw = _tar_bytes(
        [
            ("000", _good(0)),
            ("001", {"png": _png(1), "txt": "café".encode("latin-1")}),  # not UTF-8
            ("002", {"png": _png(2), "json": f'{{"caption": {LONE_SURROGATE_JSON}}}'.encode()}),
            # a bad .txt falls back to a usable JSON caption
            ("003", {"png": _png(3), "txt": b"\xff\xfe", "json": b'{"caption": "from json"}'}),
        ]
    )
    (tmp_path / "s.tar").write_bytes(raw)
    ds = TarShardDataset(str(tmp_path / "s.tar"))
    assert [it["caption"] for it in ds] == ["caption 0", "from json"]
    assert dict(ds.skipped) == {"bad_text": 2}


def test_clean_text_repairs_lone_surrogates_only():
    assert clean_text("a red circle") == "a red circle"
    assert clean_text("a \ud800 b") == "a \ufffd b"
    assert clean_text("x\ud83d\ude00y") == "x\U0001f600y"  # a split surrogate pair is joined
    assert is_valid_text("café") and not is_valid_text("a \udfff")


def test_tokenizers_and_collator_do_not_fail_on_lone_surrogates():
    tok = WordTokenizer(["a", "red", "circle"])
    out = tok(["a red \ud800 circle"], max_len=8)
    assert out.input_ids[0].tolist() == [1, 5, 6, tok.unk_id, 7, 2]
    item = {"image": torch.zeros(3, 2, 2), "caption": "a red \ud800 circle", "image_id": 0, "index": 0}
    batch = ImageTextCollator(tok, 8)([item])
    assert batch["input_ids"].shape == (1, 6)


# --------------------------------------------------------------------------- 2. counts reach the batches


def test_collator_sums_item_skip_counts_into_fixed_scalar_keys():
    tok = WordTokenizer(["a"])
    base = {"image": torch.zeros(3, 2, 2), "caption": "a", "image_id": 0}
    items = [
        {**base, "index": 0, "skipped": {"bad_image": 2, "bad_shard": 0}},
        {**base, "index": 1},  # items without counts (e.g. the built-in data) count as zero
        {**base, "index": 2, "skipped": {"bad_image": 1, "bad_text": 3, "my_reason": 4}},
        {**base, "index": 3, "skipped": {"missing_file": np.int64(1)}},
    ]
    batch = ImageTextCollator(tok, 4)(items)
    keys = [k for k in batch if k.startswith(SKIP_KEY_PREFIX)]
    assert keys == [SKIP_KEY_PREFIX + r for r in SKIP_REASONS]
    assert all(batch[k].dim() == 0 and batch[k].dtype == torch.long for k in keys)
    # scalar entries survive `.to(device)` loops and are shared, not split, by micro-batching
    halves = split_microbatches({k: v.to("cpu") for k, v in batch.items()}, 2)
    assert halves[0]["images"].shape[0] == 2 and int(halves[1][SKIP_KEY_PREFIX + "bad_image"]) == 3
    expected = dict.fromkeys(SKIP_REASONS, 0) | {"bad_image": 3, "bad_text": 3, "missing_file": 1, "other": 4}
    assert skip_counts(batch) == expected
    assert pop_skip_counts(batch) == expected
    assert not any(k.startswith(SKIP_KEY_PREFIX) for k in batch)
    assert pop_skip_counts(batch) == dict.fromkeys(SKIP_REASONS, 0)
    col = ImageTextCollator(tok, 4)
    with pytest.raises(TypeError, match=r"items\[1\]\['skipped'\] must be a mapping"):
        col([items[0], {**items[1], "skipped": 3}])
    with pytest.raises(ValueError, match=r"items\[0\]\['skipped'\]\['bad_image'\]"):
        col([{**items[0], "skipped": {"bad_image": -1}}])
    with pytest.raises(TypeError, match=r"items\[0\]\['skipped'\]\['bad_image'\]"):
        col([{**items[0], "skipped": {"bad_image": 1.5}}])
    with pytest.raises(TypeError, match="batch must be a mapping"):
        skip_counts([1])


@pytest.fixture
def json_with_broken_images(tmp_path):
    for k in range(6):
        (tmp_path / f"{k}.png").write_bytes(b"not a png" if k in (1, 3) else _png(k))
    records = [{"image": f"{k}.png", "caption": f"caption {k}"} for k in range(6)]
    records.append({"image": "gone.png", "caption": "missing"})
    (tmp_path / "ann.json").write_text(json.dumps(records))
    return tmp_path


@pytest.mark.parametrize("workers", [0, 2])
def test_json_skip_counts_reach_the_batches(json_with_broken_images, workers):
    root = json_with_broken_images
    ds = JsonCaptionDataset(root / "ann.json", root)
    assert dict(ds.skipped) == {"missing_file": 1}  # found while loading: in the dataset only
    loader = DataLoader(
        ds, batch_size=2, num_workers=workers, collate_fn=ImageTextCollator(WordTokenizer(["caption"]), 6)
    )
    counts = [pop_skip_counts(batch) for batch in loader]
    assert _total(counts) == {"bad_image": 2}
    assert ds[0]["skipped"] == dict.fromkeys(SKIP_REASONS, 0)


@pytest.fixture
def broken_shards(tmp_path):
    (tmp_path / "s-000.tar").write_bytes(
        _tar_bytes(
            [
                ("a0", _good(0)),
                ("a1", {"txt": b"no image"}),
                ("a2", _good(2)),
                ("a3", {"png": _png(3), "txt": b"   "}),
            ]
        )
    )
    (tmp_path / "s-001.tar").write_bytes(
        _tar_bytes([("b0", _good(10)), ("b1", {"png": b"garbage", "txt": b"x"}), ("b2", _good(12))])
    )
    raw = _tar_bytes([(f"c{k}", _good(20 + k)) for k in range(3)])
    (tmp_path / "s-002.tar").write_bytes(raw[: _member_offset(raw, "c2.txt")])  # cut between members
    return tmp_path


EXPECTED_TAR_SKIPS = {"missing_image": 1, "empty_caption": 1, "bad_image": 1, "bad_shard": 1}


def test_tar_items_carry_every_skip_of_their_reader(broken_shards):
    ds = TarShardDataset(str(broken_shards / "s-{000..002}.tar"))
    items = list(ds)
    assert [it["caption"] for it in items] == [
        "caption 0",
        "caption 2",
        "caption 10",
        "caption 12",
        "caption 20",
        "caption 21",
    ]
    assert dict(ds.skipped) == EXPECTED_TAR_SKIPS
    assert _total(it["skipped"] for it in items) == EXPECTED_TAR_SKIPS
    # the truncated shard's count comes with its last item, not after it
    assert items[-1]["skipped"]["bad_shard"] == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_tar_skip_counts_reach_the_batches_from_workers(broken_shards, workers):
    ds = TarShardDataset(str(broken_shards / "s-{000..002}.tar"))
    collate = ImageTextCollator(WordTokenizer(["caption"]), 6)
    loader = DataLoader(ds, batch_size=1, num_workers=workers, collate_fn=collate)
    assert _total(pop_skip_counts(batch) for batch in loader) == EXPECTED_TAR_SKIPS


def test_bad_shard_read_by_every_reader_is_counted_once(broken_shards):
    ds = TarShardDataset([str(broken_shards / "s-002.tar")])
    loader = DataLoader(ds, batch_size=1, num_workers=2, collate_fn=ImageTextCollator(WordTokenizer([]), 6))
    counts = [pop_skip_counts(batch) for batch in loader]
    assert len(counts) == 2 and _total(counts) == {"bad_shard": 1}


# --------------------------------------------------------------------------- 3. truncated / missing shards


@pytest.mark.parametrize(
    "where",
    ["member_boundary", "inside_header", "before_end_blocks", "inside_data"],
)
def test_truncated_shard_counts_as_bad_shard(tmp_path, where):
    raw = _tar_bytes([(f"c{k}", _good(20 + k)) for k in range(3)])
    cut = {
        "member_boundary": _member_offset(raw, "c2.txt"),
        "inside_header": _member_offset(raw, "c2.txt") + 100,
        "inside_data": _member_offset(raw, "c2.png") + 512 + 10,
    }.get(where)
    if where == "before_end_blocks":
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            last = tar.getmember("c2.txt")
        cut = last.offset_data + ((last.size + 511) // 512) * 512  # every member intact, no end blocks
    (tmp_path / "s.tar").write_bytes(raw[:cut])
    ds = TarShardDataset(str(tmp_path / "s.tar"))
    captions = [it["caption"] for it in ds]
    assert captions == ["caption 20", "caption 21"]  # the sample being read is dropped
    assert dict(ds.skipped) == {"bad_shard": 1}


def test_compressed_shards_and_their_truncation(tmp_path):
    raw = gzip.compress(_tar_bytes([(f"c{k}", _good(20 + k)) for k in range(3)]))
    (tmp_path / "ok.tar.gz").write_bytes(raw)
    (tmp_path / "cut.tar.gz").write_bytes(raw[: len(raw) - 40])
    ok = TarShardDataset(str(tmp_path / "ok.tar.gz"))
    assert [it["caption"] for it in ok] == ["caption 20", "caption 21", "caption 22"] and not ok.skipped
    cut = TarShardDataset(str(tmp_path / "cut.tar.gz"))
    assert len(list(cut)) <= 2 and dict(cut.skipped) == {"bad_shard": 1}
    (tmp_path / "junk.tar").write_bytes(b"\x1f\x8b" + b"\x00" * 100)  # gzip header, garbage body
    junk = TarShardDataset(str(tmp_path / "junk.tar"))
    assert list(junk) == [] and dict(junk.skipped) == {"bad_shard": 1}


def test_missing_shards_raise_naming_the_pattern_and_path(broken_shards):
    pattern = str(broken_shards / "s-{001..004}.tar")
    with pytest.raises(ValueError, match=r"2 of 4 shard files do not exist") as e:
        TarShardDataset(pattern)
    assert pattern in str(e.value) and str(broken_shards / "s-003.tar") in str(e.value)
    with pytest.raises(ValueError, match=r"shards: 1 of 2 .*nope\.tar"):
        TarShardDataset([str(broken_shards / "s-000.tar"), str(broken_shards / "nope.tar")])
    with pytest.raises(TypeError, match=r"shards\[0\]"):
        TarShardDataset([3])


# --------------------------------------------------------------------------- 4. no usable JSON record


def test_wrong_image_root_names_annotation_file_root_and_example(json_with_broken_images, tmp_path):
    root = json_with_broken_images
    wrong = tmp_path / "elsewhere"
    with pytest.raises(ValueError) as e:
        JsonCaptionDataset(root / "ann.json", wrong)
    msg = str(e.value)
    assert str(root / "ann.json") in msg and f"image_root {str(wrong)!r}" in msg
    assert str(wrong / "0.png") in msg and "7 of 7 records" in msg


def test_annotations_without_any_usable_record_raise(tmp_path):
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(ValueError, match=r"empty\.json'? hold no records"):
        JsonCaptionDataset(tmp_path / "empty.json", tmp_path)
    (tmp_path / "blank.json").write_text(json.dumps([{"image": "x.png", "caption": " "}, {"caption": "a"}]))
    with pytest.raises(ValueError, match=r"blank\.json.*all 2 records were skipped.*'bad_record': 1"):
        JsonCaptionDataset(tmp_path / "blank.json", tmp_path)


def test_mamo_training_set_names_the_config_fields(json_with_broken_images, tmp_path):
    from maskmm.models.mamo.config import load_config

    from maskmm.training.data import build_train_dataset

    root = json_with_broken_images
    cfg = load_config(
        "tiny", data={"kind": "json", "ann_file": str(root / "ann.json"), "image_root": str(tmp_path / "no")}
    )
    with pytest.raises(ValueError, match=r"'data\.ann_file' / 'data\.image_root'.*does not exist under"):
        build_train_dataset(cfg)


# --------------------------------------------------------------------------- 5. unreadable annotation files


def test_annotation_files_that_are_not_utf8_or_json_are_named(tmp_path):
    latin = tmp_path / "latin.json"
    latin.write_bytes('[\n{"image": "0.png", "caption": "café"}]'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.json' is not UTF-8 text: byte 0xe9 at line 2"):
        JsonCaptionDataset(latin, tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"image": "0.png", "caption": "x"},\n {"image": ]')
    with pytest.raises(ValueError, match=r"broken\.json' is not valid JSON: .* at line 2, column 12"):
        JsonCaptionDataset(broken, tmp_path)
    with pytest.raises(ValueError, match=r"missing\.json' does not exist"):
        JsonCaptionDataset([tmp_path / "missing.json", broken], tmp_path)
    with pytest.raises(ValueError, match="is a directory"):
        JsonCaptionDataset(tmp_path, tmp_path)
    with pytest.raises(TypeError, match=r"ann_files\[1\]"):
        JsonCaptionDataset([broken, 3], tmp_path)
    (tmp_path / "0.png").write_bytes(_png(0))
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"image": "0.png", "caption": "x"}]).encode())
    assert len(JsonCaptionDataset(bom, tmp_path)) == 1  # a byte order mark is accepted
