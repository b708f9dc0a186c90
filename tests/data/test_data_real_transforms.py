"""Real-image transforms (``maskmm.data.real_transforms``) and the ``data.train_transform`` wiring:
random resized crop + flip (+ RandAugment) for training, resize + centre crop for evaluation, the
decode-in-transform fast path of the tar readers, and the config fields."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch

from maskmm.data import ImageTextCollator, JsonCaptionDataset, TarShardDataset, WordTokenizer
from maskmm.data.images import decode_image
from maskmm.data.real_transforms import (
    RANDAUGMENT_OPS,
    EvalImageTransform,
    RandAugment,
    TrainImageTransform,
    UndecodableImage,
)
from maskmm.data.shards import ShardStream, StreamCollator

Image = pytest.importorskip("PIL.Image", reason="the real-image transforms need Pillow")


def _encode(arr: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_train_transform_crops_flips_and_is_reproducible(tmp_path):
    data = _encode(_noise(40, 60))
    t = TrainImageTransform(16, scale=(0.2, 1.0))
    a = t(data, generator=_gen(1))
    assert a.shape == (3, 16, 16) and a.dtype == torch.float32 and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, t(data, generator=_gen(1)))
    assert not torch.equal(a, t(data, generator=_gen(2)))
    # bytes, path, PIL image and the [0, 1] tensor the JSON reader decodes: the same result
    (tmp_path / "x.png").write_bytes(data)
    pil = Image.open(io.BytesIO(data))
    for source in (tmp_path / "x.png", str(tmp_path / "x.png"), pil, decode_image(data)):
        assert torch.equal(t(source, generator=_gen(1)), a)
    # the whole image (scale = ratio = 1 on a square image) is a bicubic resize; flip mirrors it
    sq = _noise(32, 32, 3)
    whole = TrainImageTransform(8, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0)
    want = torch.from_numpy(np.array(Image.fromarray(sq).resize((8, 8), Image.Resampling.BICUBIC)))
    want = want.permute(2, 0, 1).float() / 255
    assert torch.equal(whole(_encode(sq)), want)
    flipped = TrainImageTransform(8, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=1.0)
    assert torch.equal(flipped(_encode(sq)), want.flip(-1))
    # items: the image is replaced, the caption kept (no left/right swap for real captions)
    item = t({"image": data, "caption": "a dog on the left", "index": 3}, generator=_gen(1))
    assert torch.equal(item["image"], a) and item["caption"] == "a dog on the left"


def test_train_transform_normalises_and_checks_arguments():
    data = _encode(_noise(20, 20))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    plain = TrainImageTransform(8)(data, generator=_gen(0))
    normed = TrainImageTransform(8, mean=mean, std=std)(data, generator=_gen(0))
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(normed, (plain - m) / s)
    with pytest.raises(ValueError, match="scale"):
        TrainImageTransform(8, scale=(0.5, 1.5))
    with pytest.raises(ValueError, match="flip"):
        TrainImageTransform(8, flip=2)
    with pytest.raises(ValueError, match="mean and std"):
        TrainImageTransform(8, mean=mean)
    with pytest.raises(ValueError, match="size"):
        TrainImageTransform(0)
    with pytest.raises(TypeError, match="image must be"):
        TrainImageTransform(8)(3.0)


def test_jpeg_draft_decoding_stays_close_to_full_decoding():
    """A large JPEG is decoded at a reduced scale when the crop keeps twice the output size."""
    yy, xx = np.mgrid[0:800, 0:600]
    smooth = np.stack([xx * 255 // 600, yy * 255 // 800, (xx + yy) * 255 // 1400], -1).astype(np.uint8)
    data = _encode(smooth, "JPEG", quality=95)
    t = TrainImageTransform(32, scale=(0.5, 1.0))
    fast = t(data, generator=_gen(5))
    full = t(Image.open(io.BytesIO(data)).convert("RGB"), generator=_gen(5))  # a PIL image: no draft
    assert (fast - full).abs().mean() < 0.01
    ev = EvalImageTransform(32)
    assert (ev(data) - ev(Image.open(io.BytesIO(data)).convert("RGB"))).abs().mean() < 0.01


def test_undecodable_images_raise_undecodable_image(tmp_path):
    good = _encode(_noise(10, 10))
    for bad in (b"not an image", good[: len(good) // 2], b""):
        with pytest.raises(UndecodableImage):
            TrainImageTransform(8)(bad)
        with pytest.raises(OSError):
            EvalImageTransform(8)(bad)
    with pytest.raises(UndecodableImage):
        EvalImageTransform(8)(tmp_path / "missing.png")


def test_eval_transform_resizes_and_centre_crops():
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :10] = (255, 0, 0)  # red margins left and right of a blue centre square
    arr[:, 30:] = (255, 0, 0)
    arr[:, 10:30] = (0, 0, 255)
    out = EvalImageTransform(10)(_encode(arr))
    assert out.shape == (3, 10, 10)
    # blue only (the bicubic filter reaches a little past the crop at its two edges, as when resizing
    # the whole image first)
    assert torch.allclose(out[0], torch.zeros(10, 10), atol=0.1) and out[0, :, 1:-1].max() == 0
    assert torch.allclose(out[2], torch.ones(10, 10), atol=0.1)
    squashed = EvalImageTransform(10, crop=False)(_encode(arr))
    assert squashed[0, :, 0].min() > 0.9  # the red margin is kept
    # an image already of the size is unchanged (as the 8-bit decode of the file)
    sq = _noise(12, 12, 7)
    assert torch.equal(EvalImageTransform(12)(_encode(sq)), decode_image(_encode(sq)))
    assert EvalImageTransform((6, 10))(_encode(arr)).shape == (3, 6, 10)
    assert torch.equal(EvalImageTransform(10)(_encode(arr), generator=_gen(1)), out)


def test_randaugment_ops_and_draws():
    img = Image.fromarray(_noise(16, 16, 1))
    ra = RandAugment(2, 7)
    for op in RANDAUGMENT_OPS:
        out = ra.apply(img, op, 7.0)
        assert out.size == img.size and out.mode == "RGB"
        if op not in ("autocontrast", "equalize"):
            assert np.array_equal(np.array(ra.apply(img, op, 0.0)), np.array(img)), op
    a = np.array(ra(img, generator=_gen(3)))
    assert np.array_equal(a, np.array(ra(img, generator=_gen(3))))
    assert any(not np.array_equal(a, np.array(ra(img, generator=_gen(s)))) for s in range(4, 10))
    with pytest.raises(ValueError, match="num_ops"):
        RandAugment(0)
    with pytest.raises(ValueError, match="magnitude"):
        RandAugment(2, 11)
    with pytest.raises(ValueError, match="unknown"):
        ra.apply(img, "solarize", 5)
    t = TrainImageTransform(8, randaugment=RandAugment(2, 9))
    assert t(_encode(_noise(20, 20)), generator=_gen(0)).shape == (3, 8, 8)


def _shard(path, samples):
    with tarfile.open(path, "w") as tar:
        for name, data in samples:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_tar_readers_hand_encoded_images_to_decoding_transforms(tmp_path):
    _shard(
        tmp_path / "a.tar",
        [
            ("k0.jpg", _encode(_noise(30, 40), "JPEG")),
            ("k0.txt", b"first"),
            ("k1.png", b"broken"),
            ("k1.txt", b"second"),
            ("k2.png", _encode(_noise(12, 9))),
            ("k2.txt", b"third"),
        ],
    )
    t = TrainImageTransform(8)
    ds = TarShardDataset(str(tmp_path / "a.tar"), transform=t, transform_seed=4)
    items = list(ds)
    assert [it["caption"] for it in items] == ["first", "third"]
    assert dict(ds.skipped) == {"bad_image": 1} and items[0]["skipped"]["bad_image"] == 1
    assert all(it["image"].shape == (3, 8, 8) for it in items)
    again = list(TarShardDataset(str(tmp_path / "a.tar"), transform=t, transform_seed=4))
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(items, again))
    # the stream: same decoding path, per-epoch draws
    stream = ShardStream(str(tmp_path / "a.tar"), transform=t, transform_seed=4)
    it = iter(stream)
    first = [next(it) for _ in range(4)]
    assert [x["epoch"] for x in first] == [0, 0, 1, 1]
    assert not torch.equal(first[0]["image"], first[2]["image"])  # epoch 1 draws anew
    # each epoch's broken image is carried by the item read before it
    assert [x["skipped"]["bad_image"] for x in first[:3]] == [1, 0, 1]


# --------------------------------------------------------------------------- config and wiring


def _cfg(**data):
    from maskmm.models.mamo.config import load_config

    return load_config("tiny", data=data)


def _run_cfg(**data):
    """The sections the data builders read (any image size: no model to match)."""
    from maskmm.training.config import DataConfig, RunConfig

    cfg = RunConfig(data=DataConfig(**data))
    cfg.data.check()
    return cfg


def test_data_config_fields_are_checked():
    with pytest.raises(ValueError, match=r"'data\.shards'.*required with data\.kind='shards'"):
        _cfg(kind="shards")
    with pytest.raises(ValueError, match="crop_scale_min"):
        _cfg(crop_scale_min=0.0)
    with pytest.raises(ValueError, match="randaugment_magnitude"):
        _cfg(randaugment_magnitude=11)
    with pytest.raises(ValueError, match="randaugment_ops"):
        _cfg(randaugment_ops=0)
    with pytest.raises(ValueError, match="train_transform"):
        _cfg(train_transform="mixup")
    cfg = _cfg(kind="shards", shards=["/a/{0..3}.tar", "/b/*.tar"], train_transform="randaugment")
    assert list(cfg.data.shards) == ["/a/{0..3}.tar", "/b/*.tar"]


def test_training_data_builders_for_files_and_shards(tmp_path):
    from maskmm.training.data import (
        build_collate,
        build_tokenizer,
        build_train_dataset,
        eval_image_transform,
        train_image_transform,
    )

    (tmp_path / "img").mkdir()
    records = []
    for k in range(6):
        (tmp_path / "img" / f"{k}.png").write_bytes(_encode(_noise(20 + k, 30, k)))
        records.append({"image": f"img/{k}.png", "caption": f"picture number {k}"})
    (tmp_path / "ann.json").write_text(json.dumps(records))
    members = [
        (f"k{k}.{ext}", data)
        for k in range(4)
        for ext, data in (("png", _encode(_noise(20, 20 + k, k))), ("txt", f"picture number {k}".encode()))
    ]
    _shard(tmp_path / "s-0.tar", members)

    base = {"image_size": 8, "ann_file": str(tmp_path / "ann.json"), "image_root": str(tmp_path)}
    cfg = _run_cfg(kind="json", **base)
    ds = build_train_dataset(cfg)
    assert isinstance(ds, JsonCaptionDataset) and isinstance(ds.transform, TrainImageTransform)
    a = ds[0]["image"]
    assert a.shape == (3, 8, 8) and torch.equal(a, ds[0]["image"])  # per-item generators
    ds.set_epoch(1)
    assert not torch.equal(a, ds[0]["image"])
    sub = build_train_dataset(_run_cfg(kind="json", train_size=3, **base))
    sub.set_epoch(2)  # passed on to the dataset under the subset
    assert len(sub) == 3 and sub.dataset.epoch == 2 and sub.skipped is sub.dataset.skipped
    plain = build_train_dataset(_run_cfg(kind="json", train_transform="none", **base))
    assert plain[0]["image"].shape == (3, 8, 8) and plain.transform_seed is None
    assert train_image_transform(_run_cfg(train_transform="randaugment")).randaugment.num_ops == 2
    ev = eval_image_transform(_run_cfg(image_size=8, normalize="none"))
    assert ev(_encode(_noise(8, 8))).shape == (3, 8, 8)

    with pytest.raises(ValueError, match=r"'data\.tokenizer'.*data\.kind='shards'"):
        build_tokenizer(_run_cfg(kind="shards", shards=str(tmp_path / "s-0.tar")))
    scfg = _run_cfg(kind="shards", shards=str(tmp_path / "s-*.tar"), image_size=8)
    stream = build_train_dataset(scfg)
    assert isinstance(stream, ShardStream) and stream.shards == [str(tmp_path / "s-0.tar")]
    tok = WordTokenizer.from_texts([f"picture number {k}" for k in range(6)])
    collate = build_collate(scfg, tok)
    assert isinstance(collate, StreamCollator) and isinstance(collate.collate, ImageTextCollator)
    batch = collate([x for _, x in zip(range(2), stream)])
    assert batch["images"].shape == (2, 3, 8, 8) and batch["stream/position"].shape == (6,)
    stream.observe(batch)
    assert "stream/position" not in batch
    assert isinstance(build_collate(cfg, tok), ImageTextCollator)
    with pytest.raises(ValueError, match=r"config field 'data\.shards'.*no file matches"):
        build_train_dataset(_run_cfg(kind="shards", shards=str(tmp_path / "none-*.tar")))
