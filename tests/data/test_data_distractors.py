"""Fine-grained distractors and evaluation set builders, checked with an independent parser/evaluator."""

from __future__ import annotations

import pytest
import torch
from _shapes_reference import caption_true, objects_of, parse

from maskmm.data import (
    DISTRACTOR_ATTRIBUTES,
    JsonCaptionDataset,
    ShapesDataset,
    build_fine_grained_set,
    build_retrieval_set,
    make_distractors,
)


def _differences(a: dict, b: dict) -> list[str]:
    """Attribute kinds in which two parsed captions differ (structure must match)."""
    assert len(a["nps"]) == len(b["nps"])
    diffs = []
    for x, y in zip(a["nps"], b["nps"]):
        for kind, u, v in zip(("size", "colour", "shape"), x, y):
            if u != v:
                diffs.append(kind)
    if a["rel"] != b["rel"]:
        diffs.append("relation")
    if a["pos"] != b["pos"]:
        diffs.append("position")
    return diffs


def test_each_distractor_changes_exactly_its_attribute_and_is_false():
    ds = ShapesDataset("val", 150, seed=4)
    seen = {a: 0 for a in DISTRACTOR_ATTRIBUTES}
    for i in range(len(ds)):
        sample = {"scene": ds.scene(i)}
        caption = sample["scene"].caption
        truth = parse(caption)
        objs = objects_of(sample["scene"])
        out = make_distractors(sample)
        assert tuple(out) == DISTRACTOR_ATTRIBUTES
        n = len(truth["nps"])
        for attr, caps in out.items():
            if (attr == "relation" and n == 1) or (attr == "position" and n == 2):
                assert caps == []
            else:
                assert caps, (attr, caption)
            assert len(set(caps)) == len(caps)
            for cap in caps:
                d = parse(cap)
                # same template words around the attributes
                assert caption.split(" ")[0] == cap.split(" ")[0]
                assert _differences(truth, d) == [attr], (caption, cap)
                assert not caption_true(cap, objs), (caption, cap)
                seen[attr] += 1
        if truth["rel"] is not None:
            opposite = {"left": "right", "right": "left", "above": "below", "below": "above"}[truth["rel"]]
            assert parse(out["relation"][0])["rel"] == opposite
    assert all(v > 20 for v in seen.values()), seen


def test_distractors_accept_items_and_reject_other_input():
    ds = ShapesDataset("train", 5)
    item = ds[2]
    assert make_distractors(item) == make_distractors(item["scene"])
    with pytest.raises(TypeError, match="sample"):
        make_distractors({"caption": "a small red circle on the left"})


def test_fine_grained_set_is_deterministic_and_false():
    ds = ShapesDataset("heldout", 30, seed=2)
    a = build_fine_grained_set(ds, 12, seed=5)
    b = build_fine_grained_set(ds, 12, seed=5)
    assert a.images.shape == (12, 3, 64, 64) and a.image_ids.tolist() == list(range(12))
    assert a.distractors == b.distractors and torch.equal(a.images, b.images)
    c = build_fine_grained_set(ds, 12, seed=6)
    assert c.distractors != a.distractors
    for i in range(12):
        objs = objects_of(ds.scene(i))
        assert a.captions[i] == ds.scene(i).caption
        for attr, caps in a.distractors.items():
            cap = caps[i]
            if cap is None:
                assert (attr, len(objs)) in {("relation", 1), ("position", 2)}
            else:
                assert _differences(parse(a.captions[i]), parse(cap)) == [attr]
                assert not caption_true(cap, objs)
    with pytest.raises(ValueError, match="attributes"):
        build_fine_grained_set(ds, 3, attributes=("texture",))
    with pytest.raises(ValueError, match="num_images"):
        build_fine_grained_set(ds, 31)


def test_retrieval_set_positives_match_reference_truth():
    ds = ShapesDataset("val", 40, seed=8, config=None)
    rs = build_retrieval_set(ds, 40, captions_per_image=3)
    assert rs.images.shape == (40, 3, 64, 64)
    assert len(rs.texts) == rs.txt2img.numel() == rs.positives.shape[1]
    assert rs.image_ids.tolist() == list(range(40))
    # three distinct captions per image (one-object scenes have exactly 3 templates), its own first
    for i, own in enumerate(rs.img2txt):
        assert len(own) == 3 and rs.texts[own[0]] == ds[i]["caption"]
        assert len(set(rs.texts[t] for t in own)) == 3
    ref = torch.tensor(
        [[caption_true(t, objects_of(ds.scene(i))) for t in rs.texts] for i in range(40)], dtype=torch.bool
    )
    assert torch.equal(rs.positives, ref)
    assert bool(rs.positives[rs.txt2img, torch.arange(len(rs.texts))].all())
    with pytest.raises(ValueError, match="captions_per_image"):
        build_retrieval_set(ds, 3, captions_per_image=0)
    with pytest.raises(ValueError, match="k must"):
        ds.captions(0, 0)


def test_retrieval_set_from_caption_lists(tmp_path):
    from PIL import Image

    recs = []
    for k in range(3):
        Image.new("RGB", (9, 7), (k * 40, 0, 0)).save(tmp_path / f"{k}.png")
        recs.append({"image": f"{k}.png", "caption": [f"caption {k} a", f"caption {k} b"], "image_id": k})
    import json

    (tmp_path / "ann.json").write_text(json.dumps(recs))
    ds = JsonCaptionDataset(tmp_path / "ann.json", tmp_path, expand_captions=False)
    rs = build_retrieval_set(ds)
    assert rs.texts == [
        "caption 0 a",
        "caption 0 b",
        "caption 1 a",
        "caption 1 b",
        "caption 2 a",
        "caption 2 b",
    ]
    assert rs.txt2img.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(rs.positives, torch.eye(3, dtype=torch.bool).repeat_interleave(2, dim=1))
