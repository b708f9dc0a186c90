"""Tensor transforms: crop parameters, resize/normalise values, flip with caption swap, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maskmm.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ShapesDataset,
    render_scene,
)
from maskmm.data.transforms import (
    hflip,
    normalize,
    pil_to_tensor,
    random_resized_crop_params,
    resize,
    resized_crop,
    swap_words,
)


def test_crop_params_respect_scale_ratio_and_seed():
    areas, ratios = [], []
    for s in range(300):
        g = torch.Generator().manual_seed(s)
        top, left, h, w = random_resized_crop_params(37, 53, generator=g)
        assert top >= 0 and top + h <= 37 and left >= 0 and left + w <= 53 and h > 0 and w > 0
        areas.append(h * w / (37 * 53))
        ratios.append(w / h)
        g2 = torch.Generator().manual_seed(s)
        assert random_resized_crop_params(37, 53, generator=g2) == (top, left, h, w)
    areas, ratios = np.array(areas), np.array(ratios)
    # rounding to whole pixels moves the limits slightly
    assert areas.min() >= 0.06 and areas.max() <= 1.0
    assert ratios.min() >= 0.7 and ratios.max() <= 1.45
    assert areas.max() - areas.min() > 0.5  # actually random
    # a scale/ratio that no candidate can meet falls back to a centred crop with clamped aspect
    assert random_resized_crop_params(10, 40, scale=(1.0, 1.0), ratio=(1.0, 1.0)) == (0, 15, 10, 10)


def test_resize_and_crop_values_against_reference():
    x = torch.rand(3, 12, 18, dtype=torch.float64)
    # identity size is a no-op
    torch.testing.assert_close(resize(x, (12, 18)), x)
    # anti-aliased bilinear shrinking agrees with Pillow's triangle filter (channel by channel)
    from PIL import Image

    big = torch.rand(3, 31, 45)
    small = resize(big, (13, 17))
    ref = torch.stack(
        [
            torch.from_numpy(np.array(Image.fromarray(c.numpy(), mode="F").resize((17, 13), Image.BILINEAR)))
            for c in big
        ]
    )
    torch.testing.assert_close(small, ref, atol=1e-4, rtol=0)
    out = resized_crop(x, 2, 3, 8, 10, (8, 10))
    torch.testing.assert_close(out, x[:, 2:10, 3:13])
    assert resize(x[None].float(), 7).shape == (1, 3, 7, 7)


def test_normalize_and_pil_to_tensor():
    from PIL import Image

    arr = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    t = pil_to_tensor(Image.fromarray(arr))
    assert t.shape == (3, 5, 7) and t.dtype == torch.float32
    torch.testing.assert_close(t, torch.from_numpy(arr.transpose(2, 0, 1) / 255.0).float())
    gray = pil_to_tensor(Image.fromarray(arr[..., 0], mode="L"))
    assert gray.shape == (3, 5, 7) and torch.equal(gray[0], gray[2])
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-6), (torch.bfloat16, 2e-2)):
        x = t.to(dtype)
        n = normalize(x, IMAGENET_MEAN, IMAGENET_STD)
        assert n.dtype == dtype
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64)[:, None, None]
        std = torch.tensor(IMAGENET_STD, dtype=torch.float64)[:, None, None]
        ref = (x.double() - mean) / std
        err = float((n.double() - ref).abs().max())
        assert err < tol * max(1.0, float(ref.abs().max())), (dtype, err)


def test_swap_words():
    assert swap_words("a red circle left of a blue square") == "a red circle right of a blue square"
    assert swap_words("Left of RIGHT, leftover rightly") == "Right of LEFT, leftover rightly"
    assert swap_words("left", ()) == "left"


def test_flip_swaps_caption_and_keeps_scene_consistent():
    ds = ShapesDataset("train", 40, seed=11)
    flip = RandomHorizontalFlip(p=1.0)
    for i in range(12):
        it = ds[i]
        f = flip(it)
        assert torch.equal(f["image"], it["image"].flip(-1))
        assert f["caption"] == swap_words(it["caption"])
        assert f["scene"].caption == f["caption"]  # mirrored metadata says the same
        img, _ = render_scene(f["scene"], ds.config)
        torch.testing.assert_close(img, f["image"], atol=1e-5, rtol=0)
        w = it["image"].shape[-1]
        torch.testing.assert_close(f["boxes"][:, 0], w - it["boxes"][:, 2])
        torch.testing.assert_close(f["boxes"][:, 2], w - it["boxes"][:, 0])
        assert torch.equal(f["boxes"][:, 1::2], it["boxes"][:, 1::2])
        assert torch.equal(f["phrase_spans"], it["phrase_spans"])
        if "left" in it["caption"] or "right" in it["caption"]:
            assert f["caption"] != it["caption"]
    # no flip at p=0; captions as lists are swapped item by item
    kept = RandomHorizontalFlip(0.0)(ds[1])
    assert torch.equal(kept["image"], ds[1]["image"]) and kept["caption"] == ds[1]["caption"]
    lst = flip({"image": torch.zeros(3, 4, 4), "caption": ["left", "on the right"]})
    assert lst["caption"] == ["right", "on the left"]
    assert torch.equal(flip(torch.arange(6.0).view(1, 2, 3)), hflip(torch.arange(6.0).view(1, 2, 3)))


def test_seeded_pipeline_is_deterministic_and_dataset_reproducible():
    tf = Compose([RandomResizedCrop(48, scale=(0.5, 1.0)), RandomHorizontalFlip(0.5), Normalize()])
    a = ShapesDataset("train", 30, seed=0, transform=tf, transform_seed=7)
    b = ShapesDataset("train", 30, seed=0, transform=tf, transform_seed=7)
    flips = 0
    for i in (5, 0, 29):
        x, y = a[i], b[i]
        assert torch.equal(x["image"], y["image"]) and x["caption"] == y["caption"]
        assert x["image"].shape == (3, 48, 48)
    for i in range(30):
        flips += a[i]["caption"] != ShapesDataset("train", 30, seed=0)[i]["caption"]
    assert flips > 0
    e0 = a[3]["image"]
    a.set_epoch(1)
    assert not torch.equal(a[3]["image"], e0)


def test_crop_moves_boxes():
    item = {"image": torch.rand(3, 20, 30), "caption": "x", "boxes": torch.tensor([[5.0, 4.0, 15.0, 10.0]])}
    g = torch.Generator().manual_seed(0)
    top, left, h, w = random_resized_crop_params(20, 30, (0.3, 0.9), (0.75, 1.33), generator=g)
    out = RandomResizedCrop(10, scale=(0.3, 0.9), ratio=(0.75, 1.33))(
        item, generator=torch.Generator().manual_seed(0)
    )
    x0 = min(max(5.0 - left, 0), w) * 10 / w
    y0 = min(max(4.0 - top, 0), h) * 10 / h
    x1 = min(max(15.0 - left, 0), w) * 10 / w
    y1 = min(max(10.0 - top, 0), h) * 10 / h
    torch.testing.assert_close(out["boxes"], torch.tensor([[x0, y0, x1, y1]]))
    torch.testing.assert_close(out["image"], resized_crop(item["image"], top, left, h, w, 10))
    r = Resize((10, 15))(item)
    torch.testing.assert_close(r["boxes"], item["boxes"] / 2)


def test_transform_bad_input():
    with pytest.raises(TypeError, match="image"):
        resize(torch.zeros(3, 4, 4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="image"):
        resize(torch.zeros(4, 4), 2)
    with pytest.raises(ValueError, match="size"):
        Resize(0)
    with pytest.raises(ValueError, match="scale"):
        RandomResizedCrop(8, scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="p must"):
        RandomHorizontalFlip(1.5)
    with pytest.raises(ValueError, match="mean and std"):
        normalize(torch.zeros(3, 2, 2), (0.5,), (0.5,))
    with pytest.raises(ValueError, match="crop"):
        resized_crop(torch.zeros(3, 4, 4), 2, 2, 4, 4, 2)
    with pytest.raises(TypeError, match="generator"):
        random_resized_crop_params(8, 8, generator=3)
    with pytest.raises(TypeError, match="PIL"):
        pil_to_tensor(torch.zeros(3, 2, 2))
    assert math.isclose(IMAGENET_MEAN[0], 0.485)


def test_item_generators_and_worker_seeding_make_loading_reproducible():
    from torch.utils.data import DataLoader

    from maskmm.data import ImageTextCollator, WordTokenizer, item_generator, seed_worker

    a = torch.rand(4, generator=item_generator(1, 0, 5))
    assert torch.equal(a, torch.rand(4, generator=item_generator(1, 0, 5)))
    assert not torch.equal(a, torch.rand(4, generator=item_generator(1, 0, 6)))
    assert not torch.equal(a, torch.rand(4, generator=item_generator(1, 1, 5)))
    torch.manual_seed(123)
    seed_worker(0)
    first = np.random.rand()
    torch.manual_seed(123)
    seed_worker(0)
    assert np.random.rand() == first
    tf = Compose([RandomHorizontalFlip(0.5), RandomResizedCrop(32, scale=(0.6, 1.0))])
    ds = ShapesDataset("train", 12, seed=0, transform=tf, transform_seed=3)
    collate = ImageTextCollator(WordTokenizer(), 24)
    serial = list(DataLoader(ds, batch_size=4, collate_fn=collate))
    parallel = list(
        DataLoader(ds, batch_size=4, collate_fn=collate, num_workers=2, worker_init_fn=seed_worker)
    )
    for x, y in zip(serial, parallel):
        assert torch.equal(x["images"], y["images"]) and torch.equal(x["input_ids"], y["input_ids"])
