"""Feature targets at masked positions against a per-sample float64 reference."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

from maskmm.targets import (
    MaskedFeatureTargets,
    gather_masked,
    masked_feature_targets,
    masked_positions,
    select_by_mask,
)


class FakePatchMasking(NamedTuple):  # same fields as maskmm.masking.PatchMasking
    mask: torch.Tensor
    ids_keep: torch.Tensor
    ids_restore: torch.Tensor


def _patch_masking(b: int, n: int, n_mask: int, gen: torch.Generator) -> FakePatchMasking:
    noise = torch.rand(b, n, generator=gen)
    shuffle = noise.argsort(1)
    ids_restore = shuffle.argsort(1)
    ids_keep = shuffle[:, : n - n_mask].sort(1).values
    mask = torch.ones(b, n, dtype=torch.bool)
    mask.scatter_(1, ids_keep, False)
    return FakePatchMasking(mask, ids_keep, ids_restore)


def _ref_rows(x: torch.Tensor, mask: torch.Tensor, m: int, norm: str, eps: float):
    b, _, d = x.shape
    out = torch.zeros(b, m, d, dtype=torch.float64)
    valid = torch.zeros(b, m, dtype=torch.bool)
    pos = torch.zeros(b, m, dtype=torch.long)
    for i in range(b):
        idx = [t for t in range(mask.shape[1]) if bool(mask[i, t])]
        for j, t in enumerate(idx):
            row = x[i, t].double()
            if norm == "layer":
                row = (row - row.mean()) / torch.sqrt(((row - row.mean()) ** 2).mean() + eps)
            out[i, j] = row
            valid[i, j] = True
            pos[i, j] = t
    return out, valid, pos


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_cls", [True, False])
def test_patch_masking_matches_reference(dtype: torch.dtype, with_cls: bool) -> None:
    gen = torch.Generator().manual_seed(7)
    b, n, d, n_mask = 3, 17, 10, 12
    pm = _patch_masking(b, n, n_mask, gen)
    feats = torch.randn(b, n + int(with_cls), d, generator=gen).to(dtype)
    out = masked_feature_targets(feats, pm, norm="layer", eps=1e-6)
    patches = feats[:, 1:] if with_cls else feats
    want, _, pos = _ref_rows(patches, pm.mask, n_mask, "layer", 1e-6)
    assert out.features.dtype == torch.float32 and out.features.shape == (b, n_mask, d)
    assert out.valid.all() and torch.equal(out.positions, pos)
    torch.testing.assert_close(out.features.double(), want, rtol=1e-5, atol=1e-5)
    assert not out.features.requires_grad


def test_bool_mask_with_unequal_counts_is_padded_exactly() -> None:
    gen = torch.Generator().manual_seed(8)
    b, n, d = 5, 13, 6
    feats = torch.randn(b, n, d, generator=gen)
    mask = torch.rand(b, n, generator=gen) < 0.5
    mask[0] = False  # nothing masked in row 0
    mask[1] = True  # everything masked in row 1
    m = int(mask.sum(1).max())
    out = masked_feature_targets(feats, mask, norm="none")
    want, valid, pos = _ref_rows(feats, mask, m, "none", 0.0)
    assert torch.equal(out.valid, valid) and torch.equal(out.positions, pos)
    torch.testing.assert_close(out.features.double(), want, rtol=0, atol=0)
    wider = masked_feature_targets(feats, mask, norm="none", num_masked=n)
    assert wider.features.shape == (b, n, d)
    torch.testing.assert_close(wider.features[:, :m], out.features)
    assert (wider.features[:, m:] == 0).all()


def test_nothing_masked_gives_empty_rows() -> None:
    gen = torch.Generator().manual_seed(9)
    pm = _patch_masking(4, 9, 0, gen)
    out = masked_feature_targets(torch.randn(4, 10, 8), pm)
    assert out.features.shape == (4, 0, 8) and out.valid.shape == (4, 0)
    assert torch.isfinite(out.features).all()
    empty = masked_feature_targets(torch.randn(4, 9, 8), torch.zeros(4, 9, dtype=torch.bool))
    assert empty.features.shape == (4, 0, 8)


def test_gather_masked_gradient_matches_reference() -> None:
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(3, 11, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(3, 11, generator=gen) < 0.4
    mask[2] = False
    g = torch.randn(3, 11, 5, generator=gen, dtype=torch.float64)
    out = gather_masked(x, mask, num_masked=11)
    (out.features * g).sum().backward()
    # reference gradient: position t of row i receives g[i, j] where j is t's rank among masked positions
    want = torch.zeros_like(x)
    for i in range(3):
        idx = [t for t in range(11) if bool(mask[i, t])]
        for j, t in enumerate(idx):
            want[i, t] = g[i, j]
    torch.testing.assert_close(x.grad, want, rtol=0, atol=0)


def test_masked_positions_and_select_by_mask() -> None:
    gen = torch.Generator().manual_seed(11)
    mask = torch.rand(4, 9, generator=gen) < 0.3
    pos, valid = masked_positions(mask, 9)
    for i in range(4):
        idx = torch.nonzero(mask[i]).flatten()
        assert torch.equal(pos[i, : len(idx)], idx) and bool(valid[i, : len(idx)].all())
        assert not valid[i, len(idx) :].any() and (pos[i, len(idx) :] == 0).all()
    x = torch.randn(4, 9, 3, generator=gen)
    flat = select_by_mask(x, mask)
    want = torch.stack([x[i, t] for i in range(4) for t in range(9) if bool(mask[i, t])])
    torch.testing.assert_close(flat, want)


def test_module_and_real_patch_masking() -> None:
    masking = pytest.importorskip("maskmm.masking", reason="maskmm.masking is not importable")
    gen = torch.Generator().manual_seed(12)
    pm = masking.random_patch_masking(2, 16, 0.75, generator=gen)
    feats = torch.randn(2, 17, 4)
    out = MaskedFeatureTargets()(feats, pm)
    want, _, _ = _ref_rows(feats[:, 1:], pm.mask, 12, "layer", 1e-6)
    torch.testing.assert_close(out.features.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "features,masking,kwargs,exc,match",
    [
        (torch.randn(2, 5, 3), torch.zeros(2, 3, dtype=torch.bool), {}, ValueError, "features"),
        (torch.randn(2, 4, 3), torch.zeros(2, 4), {}, TypeError, "masking"),
        (torch.randn(3, 4, 3), torch.zeros(2, 4, dtype=torch.bool), {}, ValueError, "batch"),
        (torch.randn(2, 4), torch.zeros(2, 4, dtype=torch.bool), {}, ValueError, "features"),
        (torch.randn(2, 4, 3), "mask", {}, TypeError, "masking"),
        (torch.randn(2, 4, 3), torch.zeros(2, 4, dtype=torch.bool), {"norm": "rms"}, ValueError, "norm"),
        (torch.randn(2, 4, 3), torch.zeros(2, 4, dtype=torch.bool), {"has_cls": True}, ValueError, "has_cls"),
        (
            torch.randn(2, 4, 3),
            torch.zeros(2, 4, dtype=torch.bool),
            {"num_masked": 5},
            ValueError,
            "num_masked",
        ),
    ],
)
def test_bad_inputs(features, masking, kwargs, exc, match) -> None:
    with pytest.raises(exc, match=match):
        masked_feature_targets(features, masking, **kwargs)
