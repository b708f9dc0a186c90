"""Built-in shapes data: determinism, splits, captions vs rendered pixels, boxes, rasteriser."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _shapes_reference import ANCHOR_XY, caption_true, nearest_anchor, objects_of, parse
from matplotlib.path import Path
from torch.utils.data import DataLoader, DistributedSampler

from maskmm.data import ShapesConfig, ShapesDataset, render_scene
from maskmm.data.raster import SHAPE_POLYGONS, render_objects

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "cyan", "white"]
SHAPES = ["circle", "square", "triangle", "diamond", "cross", "star"]
# Documented rule: colour_index == (3 * shape_index + 1) % n_colours.
HELDOUT = {(COLOURS[(3 * s + 1) % 8], SHAPES[s]) for s in range(6)}


def test_same_seed_and_index_give_identical_items():
    a = ShapesDataset("train", 50, seed=3)
    b = ShapesDataset("train", 50, seed=3)
    for i in (0, 7, 49, 23):  # access order must not matter
        x, y = a[i], b[i]
        assert torch.equal(x["image"], y["image"])
        assert x["caption"] == y["caption"]
        assert torch.equal(x["boxes"], y["boxes"])
    assert torch.equal(a[7]["image"], a[7]["image"])
    c = ShapesDataset("train", 50, seed=4)
    assert sum(c[i]["caption"] != a[i]["caption"] for i in range(20)) >= 15
    v = ShapesDataset("val", 50, seed=3)
    assert sum(v[i]["caption"] != a[i]["caption"] for i in range(20)) >= 15


def test_item_layout_and_dtypes():
    ds = ShapesDataset("val", 11, config=ShapesConfig(image_size=72))
    assert len(ds) == 11
    it = ds[-1]
    assert it["index"] == it["image_id"] == 10
    assert it["image"].shape == (3, 72, 72) and it["image"].dtype == torch.float32
    assert float(it["image"].min()) >= 0.0 and float(it["image"].max()) <= 1.0
    n = len(it["scene"].objects)
    assert it["boxes"].shape == (n, 4) and it["phrase_spans"].shape == (n, 2)
    words = it["caption"].split(" ")
    for k, (s, e) in enumerate(it["phrase_spans"].tolist()):
        o = it["scene"].objects[k]
        assert words[s:e] == ["a", o.size, o.colour, o.shape]
    with pytest.raises(IndexError):
        ds[11]


def test_splits_are_disjoint_in_heldout_pairs():
    pairs_seen = set()
    for split in ("train", "val"):
        ds = ShapesDataset(split, 3000, seed=1)
        for i in range(len(ds)):
            pairs = {(o.colour, o.shape) for o in ds.scene(i).objects}
            assert not pairs & HELDOUT, (split, i, pairs)
            pairs_seen |= pairs
    # every colour and every shape still occurs in training, only not in a held-out pairing
    assert {c for c, _ in pairs_seen} == set(COLOURS) and {s for _, s in pairs_seen} == set(SHAPES)
    held = ShapesDataset("heldout", 1000, seed=1)
    counts = [len({(o.colour, o.shape) for o in held.scene(i).objects} & HELDOUT) for i in range(len(held))]
    assert min(counts) >= 1
    assert {(o.colour, o.shape) for i in range(len(held)) for o in held.scene(i).objects} >= HELDOUT


def test_scene_invariants_over_many_samples():
    ds = ShapesDataset("train", 2000, seed=5)
    n_objects = []
    for i in range(len(ds)):
        sc = ds.scene(i)
        objs = objects_of(sc)
        n_objects.append(len(objs))
        assert len({(o["colour"], o["shape"]) for o in objs}) == len(objs)
        anchors = [nearest_anchor(o["cx"], o["cy"]) for o in objs]
        assert len(set(anchors)) == len(anchors)
        for a, b in zip(sc.boxes(), sc.boxes()[1:]):  # consecutive boxes never overlap
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
        assert caption_true(sc.caption, objs), sc.caption
        for cap in ds.captions(i, 4):
            assert caption_true(cap, objs), cap
    assert set(n_objects) == {1, 2, 3}
    frac = np.bincount(n_objects)[1:] / len(n_objects)
    assert np.all(np.abs(frac - 1 / 3) < 0.05)


def _pixel_objects(item) -> list[dict]:
    """Per scene object, measured from the image only inside its box: colour, extent, centre."""
    image = item["image"].numpy()
    bg = float(np.median(image[:, :2, :2]))
    s = image.shape[-1]
    out = []
    for (x0, y0, x1, y1), o in zip(item["boxes"].tolist(), item["scene"].objects):
        xa, xb, ya, yb = int(np.floor(x0)), int(np.ceil(x1)), int(np.floor(y0)), int(np.ceil(y1))
        crop = image[:, ya:yb, xa:xb]
        fg = np.abs(crop - bg).max(axis=0) > 0.25
        ys, xs = np.nonzero(fg)
        out.append(
            {
                "fg": fg[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1],  # cropped to the measured extent
                "core_rgb": crop[:, fg].reshape(3, -1),
                "cx": (xa + xs.mean() + 0.5) / s,
                "cy": (ya + ys.mean() + 0.5) / s,
                "width": (xs.max() - xs.min() + 1) / s,
                "scene": o,
            }
        )
    return out


def test_captions_match_rendered_pixels():
    cfg = ShapesConfig(image_size=96)
    ds = ShapesDataset("train", 60, seed=2, config=cfg)
    for i in range(len(ds)):
        it = ds[i]
        parsed = parse(it["caption"])
        measured = _pixel_objects(it)
        assert len(parsed["nps"]) == len(measured)
        objs = []
        for (size, colour, shape), m in zip(parsed["nps"], measured):
            # colour: the object's fully covered pixels have the named colour
            rgb = np.median(m["core_rgb"], axis=1)
            assert np.abs(rgb - np.array(cfg.colours[colour])).max() < 0.05, (colour, rgb)
            # size: pixel extent tells small from large (half extents 0.08 vs 0.125 of the side)
            half = m["width"] / 2
            assert (half < 0.1) == (size == "small"), (size, half)
            objs.append({"size": size, "colour": colour, "shape": shape, "cx": m["cx"], "cy": m["cy"]})
            fill = m["fg"].mean()
            expected_fill = {
                "circle": np.pi / 4,
                "square": 1.0,
                "triangle": 0.5,
                "diamond": 0.5,
                "cross": 0.59,
                "star": 0.43,  # 5 * 1 * 0.5 * sin(36 deg) / (2 sin(72 deg) * (1 + cos(36 deg)))
            }[shape]
            assert abs(fill - expected_fill) < 0.12, (shape, fill)
            if shape in ("triangle", "diamond"):
                top = m["fg"][: m["fg"].shape[0] // 2].sum() / m["fg"].sum()
                assert (top < 0.4) == (shape == "triangle"), (shape, top)
        # positions and relations read from pixel centres
        assert caption_true(it["caption"], objs), it["caption"]


def test_boxes_contain_object_pixels_and_nothing_is_outside():
    ds = ShapesDataset("val", 40, seed=0, return_alpha=True)
    for i in range(len(ds)):
        it = ds[i]
        image, alpha, boxes = it["image"], it["alpha"], it["boxes"]
        s = image.shape[-1]
        centres = torch.arange(s, dtype=torch.float32) + 0.5
        inside_any = torch.zeros(s, s, dtype=torch.bool)
        for k, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
            assert 0 <= x0 < x1 <= s and 0 <= y0 < y1 <= s
            ys, xs = torch.nonzero(alpha[k] > 0, as_tuple=True)
            assert xs.numel() > 0
            assert float(centres[xs].min()) >= x0 - 0.5 and float(centres[xs].max()) <= x1 + 0.5
            assert float(centres[ys].min()) >= y0 - 0.5 and float(centres[ys].max()) <= y1 + 0.5
            # tight: covered pixels reach within 1.5 px of every box side (tips are thin)
            assert float(centres[xs].min()) <= x0 + 1.5 and float(centres[xs].max()) >= x1 - 1.5
            assert float(centres[ys].min()) <= y0 + 1.5 and float(centres[ys].max()) >= y1 - 1.5
            in_box = (
                (centres[None, :] >= x0 - 0.5)
                & (centres[None, :] <= x1 + 0.5)
                & (centres[:, None] >= y0 - 0.5)
                & (centres[:, None] <= y1 + 0.5)
            )
            inside_any |= in_box
        bg = image[:, 0, 0]
        changed = (image - bg[:, None, None]).abs().amax(0) > 1e-6
        assert not bool((changed & ~inside_any).any())


@pytest.mark.parametrize("shape", ["circle", "triangle", "star", "cross"])
def test_rasteriser_matches_supersampled_coverage(shape):
    size, cx, cy, r = 41, 19.3, 21.7, 13.1
    image, alphas = render_objects(size, 0.0, [(shape, (1.0, 1.0, 1.0), cx, cy, r)], return_alpha=True)
    alpha = torch.from_numpy(alphas[0]).double()
    assert np.allclose(image[0], alphas[0])  # white on black: the red channel is the coverage
    k = 8  # 8x8 samples per pixel
    sub = (np.arange(size * k) + 0.5) / k
    xx, yy = np.meshgrid(sub, sub)
    pts = np.stack([xx.ravel(), yy.ravel()], 1)
    if shape == "circle":
        inside = (pts[:, 0] - cx) ** 2 + (pts[:, 1] - cy) ** 2 <= r * r
    else:
        inside = Path(SHAPE_POLYGONS[shape] * r + np.array([cx, cy])).contains_points(pts)
    ref = torch.from_numpy(inside.reshape(size, k, size, k).mean(axis=(1, 3)))
    err = (alpha - ref).abs()
    assert float(err.max()) < 0.35
    assert float(err.mean()) < 0.01
    assert abs(float(alpha.sum() - ref.sum())) / float(ref.sum()) < 0.03


def test_flipped_scene_renders_as_flipped_image():
    ds = ShapesDataset("train", 20, seed=9)
    for i in range(8):
        it = ds[i]
        mirrored = it["scene"].mirrored()
        img, _ = render_scene(mirrored, ds.config)
        torch.testing.assert_close(img, it["image"].flip(-1), atol=1e-5, rtol=0)


def test_works_with_distributed_sampler_and_loader():
    ds = ShapesDataset("train", 23, seed=0)
    parts = [list(DistributedSampler(ds, num_replicas=3, rank=r, shuffle=True, seed=1)) for r in range(3)]
    assert all(len(p) == 8 for p in parts)
    assert set().union(*map(set, parts)) == set(range(23))
    from maskmm.data import ImageTextCollator, WordTokenizer

    loader = DataLoader(ds, batch_size=5, collate_fn=ImageTextCollator(WordTokenizer(), 32), shuffle=False)
    batch = next(iter(loader))
    assert batch["images"].shape == (5, 3, 64, 64)
    assert batch["index"].tolist() == [0, 1, 2, 3, 4]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="split"):
        ShapesDataset("test")
    with pytest.raises(ValueError, match="length"):
        ShapesDataset("train", -1)
    with pytest.raises(ValueError, match="seed"):
        ShapesDataset("train", 5, seed=-2)
    with pytest.raises(TypeError, match="config"):
        ShapesDataset("train", 5, config={"image_size": 64})
    with pytest.raises(ValueError, match="image_size"):
        ShapesConfig(image_size=8)
    with pytest.raises(ValueError, match="touch"):
        ShapesConfig(sizes={"small": 0.08, "large": 0.16})
    with pytest.raises(ValueError, match="heldout_pairs"):
        ShapesConfig(heldout_pairs=frozenset({("pink", "circle")}))
    with pytest.raises(ValueError, match="object_count_probs"):
        ShapesConfig(object_count_probs=(0.5, 0.5, 0.5))
    with pytest.raises(TypeError, match="index"):
        ShapesDataset("train", 5)["0"]


def test_edge_configs_one_object_and_anchors():
    ds = ShapesDataset(
        "train", 50, config=ShapesConfig(object_count_probs=(1.0, 0.0, 0.0), position_jitter=0.0)
    )
    for i in range(len(ds)):
        sc = ds.scene(i)
        assert len(sc.objects) == 1
        o = sc.objects[0]
        assert (o.cx, o.cy) == pytest.approx(ANCHOR_XY[o.anchor])
