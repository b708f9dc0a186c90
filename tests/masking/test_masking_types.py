from __future__ import annotations

import pytest
import torch

from maskmm.masking import (
    PatchMasking,
    gather_tokens,
    patch_masking_from_mask,
    random_patch_masking,
    restore_tokens,
)

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def _ref_gather(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.stack([x[b, int(i)] for i in ids[b]]) for b in range(x.shape[0])])


def _ref_restore(x_kept: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Plain loop: kept tokens in ascending visible order, fill rows in ascending masked order."""
    b, n = mask.shape
    d = x_kept.shape[-1]
    rows = []
    for bi in range(b):
        kept_j, fill_j, row = 0, 0, []
        for pos in range(n):
            if bool(mask[bi, pos]):
                row.append(fill[bi, fill_j] if fill.dim() == 3 else fill.reshape(d))
                fill_j += 1
            else:
                row.append(x_kept[bi, kept_j])
                kept_j += 1
        rows.append(torch.stack(row))
    return torch.stack(rows)


def _random_mask(b: int, n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, n, dtype=torch.bool)
    for bi in range(b):
        mask[bi, torch.randperm(n, generator=g)[:k]] = True
    return mask


@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_values_and_grads(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    x64 = torch.randn(3, 11, 5, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 11, (3, 7), generator=g)
    up = torch.randn(3, 7, 5, generator=g, dtype=torch.float64)
    x = x64.to(dtype).requires_grad_(True)
    out = gather_tokens(x, ids)
    out.backward(up.to(dtype))
    xr = x64.to(dtype).double().requires_grad_(True)
    ref = _ref_gather(xr, ids)
    ref.backward(up.to(dtype).double())
    assert out.dtype == dtype and out.shape == (3, 7, 5)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=0)  # a gather is exact
    tol = {torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 2e-2}.get(dtype, 1e-12)
    torch.testing.assert_close(x.grad.double(), xr.grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_position_fill", [False, True])
def test_restore_values_and_grads(dtype: torch.dtype, per_position_fill: bool) -> None:
    b, n, k, d = 3, 13, 5, 6
    mask = _random_mask(b, n, k, seed=2)
    pm = patch_masking_from_mask(mask)
    g = torch.Generator().manual_seed(3)
    kept64 = torch.randn(b, n - k, d, generator=g, dtype=torch.float64)
    fill64 = torch.randn((b, k, d) if per_position_fill else (d,), generator=g, dtype=torch.float64)
    up = torch.randn(b, n, d, generator=g, dtype=torch.float64).to(dtype)

    kept = kept64.to(dtype).requires_grad_(True)
    fill = fill64.clone().requires_grad_(True)  # fp64 parameter, cast inside
    out = restore_tokens(kept, pm.ids_restore, fill)
    out.backward(up)

    kept_r = kept64.to(dtype).double().requires_grad_(True)
    fill_r = fill64.clone().requires_grad_(True)
    ref = _ref_restore(kept_r, mask, fill_r.to(dtype).double())
    ref.backward(up.double())

    assert out.dtype == dtype and out.shape == (b, n, d)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=0)
    tol = {torch.float32: 1e-6, torch.float16: 1e-2, torch.bfloat16: 5e-2}.get(dtype, 1e-12)
    torch.testing.assert_close(kept.grad.double(), kept_r.grad, rtol=tol, atol=tol)
    torch.testing.assert_close(fill.grad, fill_r.grad, rtol=tol, atol=tol)


def test_drop_and_restore_round_trip() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 17, 3, generator=g)
    pm = random_patch_masking(5, 17, 0.6, generator=g)
    mask_token = torch.tensor([7.0, -1.0, 0.5])
    out = restore_tokens(gather_tokens(x, pm.ids_keep), pm.ids_restore, mask_token)
    visible = ~pm.mask
    assert torch.equal(out[visible], x[visible])
    assert torch.equal(out[pm.mask], mask_token.expand(int(pm.mask.sum()), 3))


def test_patch_masking_from_mask_indices() -> None:
    mask = _random_mask(4, 9, 4, seed=5)
    pm = patch_masking_from_mask(mask)
    assert isinstance(pm, PatchMasking)
    for b in range(4):
        visible = [i for i in range(9) if not mask[b, i]]
        hidden = [i for i in range(9) if mask[b, i]]
        assert pm.ids_keep[b].tolist() == visible
        order = visible + hidden
        assert [order[int(j)] for j in pm.ids_restore[b]] == list(range(9))
    # with the count given, no synchronisation and the same answer
    pm2 = patch_masking_from_mask(mask, 4)
    assert torch.equal(pm2.ids_keep, pm.ids_keep) and torch.equal(pm2.ids_restore, pm.ids_restore)


def test_patch_masking_from_mask_edge_cases() -> None:
    none = patch_masking_from_mask(torch.zeros(2, 5, dtype=torch.bool))
    assert none.ids_keep.tolist() == [list(range(5))] * 2
    assert none.ids_restore.tolist() == [list(range(5))] * 2
    empty = patch_masking_from_mask(torch.zeros(0, 5, dtype=torch.bool))
    assert empty.ids_keep.shape == (0, 5)


def test_bad_inputs_name_the_argument() -> None:
    x = torch.randn(2, 5, 3)
    with pytest.raises(TypeError, match="ids"):
        gather_tokens(x, torch.zeros(2, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="ids"):
        gather_tokens(x, torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="x"):
        gather_tokens(torch.randn(2, 5), torch.zeros(2, 3, dtype=torch.long))
    ids_restore = torch.arange(5).expand(2, 5).contiguous()
    with pytest.raises(ValueError, match="fill"):
        restore_tokens(torch.randn(2, 3, 4), ids_restore, torch.zeros(5))
    with pytest.raises(ValueError, match="x_kept"):
        restore_tokens(torch.randn(2, 6, 4), ids_restore, torch.zeros(4))
    with pytest.raises(TypeError, match="ids_restore"):
        restore_tokens(torch.randn(2, 3, 4), ids_restore.float(), torch.zeros(4))
    with pytest.raises(ValueError, match="same number"):
        patch_masking_from_mask(torch.tensor([[True, False], [True, True]]))
    with pytest.raises(TypeError, match="mask"):
        patch_masking_from_mask(torch.zeros(2, 3))
