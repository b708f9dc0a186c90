from __future__ import annotations

import math

import pytest
import torch

from maskmm.evaluation import box_patch_mask, distractor_accuracy, grad_cam, grounding_scores


def test_distractor_accuracy_reference():
    g = torch.Generator().manual_seed(0)
    n = 17
    true = torch.randn(n, generator=g, dtype=torch.float64)
    scores = {
        "colour": torch.randn(n, 3, generator=g, dtype=torch.float64),
        "shape": torch.randn(n, 2, generator=g),
    }
    valid = {"colour": torch.rand(n, 3, generator=g) > 0.3}
    valid["colour"][0] = False  # sample 0 has no colour distractor
    got = distractor_accuracy(true, scores, valid)
    # reference loops
    ok, cnt = 0, 0
    for i in range(n):
        vs = [scores["colour"][i, j].item() for j in range(3) if valid["colour"][i, j]]
        if vs:
            cnt += 1
            ok += true[i].item() > max(vs)
    assert got["colour_count"].item() == cnt
    assert got["colour"].item() == pytest.approx(100 * ok / cnt)
    ok2 = sum(true[i].item() > scores["shape"][i].max().item() for i in range(n))
    assert got["shape"].item() == pytest.approx(100 * ok2 / n, rel=1e-6)
    assert got["mean"].item() == pytest.approx((got["colour"].item() + got["shape"].item()) / 2)


def test_distractor_ties_and_empty():
    t = torch.ones(3)
    got = distractor_accuracy(
        t, {"size": torch.ones(3, 1), "rel": torch.zeros(3, 1)}, {"rel": torch.zeros(3, 1, dtype=torch.bool)}
    )
    assert got["size"].item() == 0.0  # ties are errors
    assert math.isnan(got["rel"].item()) and got["rel_count"].item() == 0
    assert got["mean"].item() == 0.0
    with pytest.raises(ValueError, match="distractor_scores"):
        distractor_accuracy(t, {"size": torch.ones(4, 1)})


def _ref_grad_cam(act, grad, valid):
    """Loop Grad-CAM: w = mean of grad over the valid tokens, map = relu(sum_d w_d * act), 0 where invalid."""
    b, n, d = act.shape
    ref = torch.zeros(b, n, dtype=torch.float64)
    for i in range(b):
        keep = [j for j in range(n) if valid[i][j]]
        if not keep:
            continue  # no valid token: zero weights, zero map
        w = [sum(grad[i, j, k].item() for j in keep) / len(keep) for k in range(d)]
        for j in keep:
            ref[i, j] = max(0.0, sum(w[k] * act[i, j, k].item() for k in range(d)))
    return ref


def test_grad_cam_matches_loop_reference():
    g = torch.Generator().manual_seed(1)
    b, n, d = 4, 5, 4
    act = torch.randn(b, n, d, generator=g, dtype=torch.float64)
    grad = torch.randn(b, n, d, generator=g, dtype=torch.float64)  # differs per token
    cam = grad_cam(act, grad)
    assert cam.dtype == torch.float32 and cam.shape == (b, n)
    ref = _ref_grad_cam(act, grad, [[True] * n] * b)
    assert (ref > 0).any() and (ref == 0).any()  # relu is exercised both ways
    torch.testing.assert_close(cam.double(), ref, rtol=1e-5, atol=1e-6)
    valid = torch.tensor(
        [
            [True] * 5,
            [True, True, False, False, False],
            [False, True, False, True, True],
            [False] * 5,
        ]
    )
    cam_v = grad_cam(act, grad, valid=valid)
    ref_v = _ref_grad_cam(act, grad, valid.tolist())
    torch.testing.assert_close(cam_v.double(), ref_v, rtol=1e-5, atol=1e-6)
    # the weights of the partly valid rows differ from the all-token mean, so the maps differ too
    assert not torch.allclose(cam_v[1:3].double(), ref[1:3] * valid[1:3], atol=1e-4)


def _ref_box_mask(box, grid, size, min_overlap):
    gh, gw = grid
    ph, pw = size[0] / gh, size[1] / gw
    out = []
    for i in range(gh):
        for j in range(gw):
            oy = max(0.0, min((i + 1) * ph, box[3]) - max(i * ph, box[1]))
            ox = max(0.0, min((j + 1) * pw, box[2]) - max(j * pw, box[0]))
            out.append(oy * ox > min_overlap * ph * pw)
    return out


@pytest.mark.parametrize("min_overlap", [0.0, 0.5])
def test_box_patch_mask_reference(min_overlap):
    g = torch.Generator().manual_seed(2)
    xy = torch.rand(7, 2, generator=g) * 40
    wh = torch.rand(7, 2, generator=g) * 20 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    got = box_patch_mask(boxes, (3, 5), (48, 80), min_overlap=min_overlap)
    ref = torch.tensor([_ref_box_mask(b.tolist(), (3, 5), (48, 80), min_overlap) for b in boxes])
    assert torch.equal(got, ref)
    with pytest.raises(ValueError, match="min_overlap"):
        box_patch_mask(boxes, (3, 5), (48, 80), min_overlap=1.0)


def test_box_patch_mask_and_scores():
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0], [16.0, 8.0, 32.0, 32.0]])
    m = box_patch_mask(boxes, (4, 4), (32, 32))
    assert m.shape == (2, 16)
    assert m[0].view(4, 4)[:2, :2].all() and m[0].sum() == 4
    assert m[1].view(4, 4)[1:, 2:].all() and m[1].sum() == 6
    small = box_patch_mask(torch.tensor([[10.0, 10.0, 13.0, 13.0]]), (2, 2), (32, 32))
    assert small.sum() == 1  # a small object inside one patch still owns that patch
    cam = torch.zeros(2, 16)
    cam[0, 0] = 3.0  # inside box 0
    cam[0, 15] = 1.0  # outside
    cam[1, 0] = 2.0  # outside box 1
    s = grounding_scores(cam, m)
    assert s["pointing"].item() == pytest.approx(50.0)
    assert s["energy"].item() == pytest.approx(100 * (0.75 + 0.0) / 2)
    assert s["box_fraction"].item() == pytest.approx(100 * 10 / 32)
    flat = grounding_scores(torch.ones(2, 16), m)
    assert flat["pointing"].item() == 0.0
    with pytest.raises(ValueError, match="box_mask"):
        grounding_scores(cam, m[:, :3])
