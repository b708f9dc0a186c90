from __future__ import annotations

import hashlib

import pytest
import torch

from maskmm.masking import BlockPatchMasker, block_patch_masking, random_patch_masking
from maskmm.masking.block import _ring_reach


def _masked_neighbour_fraction(mask: torch.Tensor, gh: int, gw: int) -> float:
    """Mean over masked patches of (masked 4-neighbours / existing 4-neighbours), plain loops."""
    m = mask.view(-1, gh, gw).tolist()
    total, count = 0.0, 0
    for grid in m:
        for r in range(gh):
            for c in range(gw):
                if not grid[r][c]:
                    continue
                nb = [(r + dr, c + dc) for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))]
                nb = [(a, b) for a, b in nb if 0 <= a < gh and 0 <= b < gw]
                total += sum(grid[a][b] for a, b in nb) / len(nb)
                count += 1
    return total / max(count, 1)


def _expected(ratio: float, n: int) -> int:
    return min(int(ratio * n + 0.5), n - 1)


@pytest.mark.parametrize("grid", [(1, 1), (1, 7), (3, 5), (7, 9), (14, 14)])
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.4, 0.75, 0.95])
def test_exact_counts(grid: tuple[int, int], ratio: float) -> None:
    n = grid[0] * grid[1]
    pm = block_patch_masking(8, grid, ratio, generator=torch.Generator().manual_seed(n))
    assert pm.mask.shape == (8, n)
    assert pm.mask.sum(dim=1).tolist() == [_expected(ratio, n)] * 8
    assert pm.ids_keep.shape == (8, n - _expected(ratio, n))
    assert torch.equal(pm.mask.gather(1, pm.ids_keep), torch.zeros_like(pm.ids_keep, dtype=torch.bool))


@pytest.mark.parametrize(
    ("kwargs", "ratio"),
    [
        ({"num_candidates": 1, "min_block_patches": 1, "max_block_patches": 1}, 0.5),  # top-up path
        ({"num_candidates": 2, "min_block_patches": 2, "max_block_patches": 3}, 0.6),  # top-up path
        ({"min_block_patches": 16, "max_block_patches": 60}, 0.3),  # trimming the last rectangle
        ({"aspect_ratio": (1.0, 1.0)}, 0.45),
        ({"num_candidates": 64}, 0.75),
    ],
)
def test_exact_counts_all_paths(kwargs: dict, ratio: float) -> None:
    gh, gw = 9, 11
    pm = block_patch_masking(16, (gh, gw), ratio, generator=torch.Generator().manual_seed(3), **kwargs)
    assert pm.mask.sum(dim=1).tolist() == [_expected(ratio, gh * gw)] * 16


def test_blocks_are_contiguous() -> None:
    gh, gw, ratio = 14, 14, 0.3
    g = torch.Generator().manual_seed(5)
    block = block_patch_masking(64, (gh, gw), ratio, generator=g)
    rand = random_patch_masking(64, gh * gw, ratio, generator=g)
    f_block = _masked_neighbour_fraction(block.mask, gh, gw)
    f_rand = _masked_neighbour_fraction(rand.mask, gh, gw)
    assert f_rand < 0.4  # about the ratio for independent positions
    assert f_block > f_rand + 0.3


def test_top_up_prefers_adjacent_patches() -> None:
    gh, gw = 10, 10
    pm = block_patch_masking(
        64,
        (gh, gw),
        0.2,
        num_candidates=1,
        min_block_patches=1,
        max_block_patches=1,
        generator=torch.Generator().manual_seed(6),
    )
    # one seed patch, the rest grown from its neighbourhood: far more clustered than random
    assert _masked_neighbour_fraction(pm.mask, gh, gw) > 0.35


def test_determinism_and_seed_dependence() -> None:
    a = block_patch_masking(4, (7, 8), 0.4, generator=torch.Generator().manual_seed(1))
    b = block_patch_masking(4, (7, 8), 0.4, generator=torch.Generator().manual_seed(1))
    c = block_patch_masking(4, (7, 8), 0.4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.mask, b.mask) and torch.equal(a.ids_restore, b.ids_restore)
    assert not torch.equal(a.mask, c.mask)


def test_module_matches_function() -> None:
    masker = BlockPatchMasker(0.4, min_block_patches=3, patch_size=8)
    images = torch.randn(3, 3, 56, 64)
    out = masker.mask_images(images, generator=torch.Generator().manual_seed(4))
    ref = block_patch_masking(3, (7, 8), 0.4, min_block_patches=3, generator=torch.Generator().manual_seed(4))
    assert torch.equal(out.mask, ref.mask) and out.images is images


def test_bad_inputs_name_the_argument() -> None:
    with pytest.raises(ValueError, match="ratio"):
        block_patch_masking(2, (4, 4), 1.0)
    with pytest.raises(ValueError, match=r"grid\[0\]"):
        block_patch_masking(2, (0, 4), 0.5)
    with pytest.raises(TypeError, match="grid"):
        block_patch_masking(2, 16, 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="aspect_ratio"):
        block_patch_masking(2, (4, 4), 0.5, aspect_ratio=(2.0, 1.0))
    with pytest.raises(ValueError, match="max_block_patches"):
        block_patch_masking(2, (4, 4), 0.5, min_block_patches=5, max_block_patches=4)
    with pytest.raises(ValueError, match="num_candidates"):
        block_patch_masking(2, (4, 4), 0.5, num_candidates=0)
    with pytest.raises(ValueError, match="generator"):
        block_patch_masking(2, (4, 4), 0.5, device="meta", generator=torch.Generator())


def test_no_side_of_the_grid_is_favoured() -> None:
    # Rectangles inside the grid cover the centre more often than the border (as BEiT's), but the
    # marginal frequencies must be symmetric under vertical and horizontal flips.
    draws, gh, gw = 3000, 7, 9
    pm = block_patch_masking(draws, (gh, gw), 0.4, generator=torch.Generator().manual_seed(11))
    counts = pm.mask.double().sum(0).view(gh, gw)
    assert bool((counts > 0).all())  # every position is reachable
    for flipped in (counts.flip(0), counts.flip(1)):
        z = (counts - flipped).abs() / (counts + flipped).sqrt().clamp(min=1.0)  # ~N(0, 1) per cell
        assert z.max() < 5.0


def _mask_digest(mask: torch.Tensor) -> str:
    return hashlib.sha256(mask.to(torch.uint8).numpy().tobytes()).hexdigest()[:16]


@pytest.mark.parametrize(
    ("batch", "grid", "ratio", "kwargs", "seed", "digest"),
    [
        (1, (14, 14), 0.4, {}, 0, "aa6147c4786018ac"),
        (256, (14, 14), 0.4, {}, 1, "b1a6e26fc01b6a5e"),
        (256, (14, 14), 0.75, {}, 2, "e68f689ad8491cf3"),
        (
            32,
            (7, 9),
            0.6,
            {"num_candidates": 2, "min_block_patches": 2, "max_block_patches": 3},
            3,
            "402a7a513af1bbf4",
        ),
        (16, (9, 11), 0.3, {"min_block_patches": 16, "max_block_patches": 60}, 4, "61d4e8a680f4451b"),
        (8, (3, 30), 0.5, {"aspect_ratio": (0.5, 2.0), "min_block_patches": 1}, 5, "31bd1d5745cf44b7"),
        (4, (24, 24), 0.9, {}, 6, "39a6fbde4092fd47"),
    ],
)
def test_pinned_masks(
    batch: int, grid: tuple[int, int], ratio: float, kwargs: dict, seed: int, digest: str
) -> None:
    """Masks of a seeded CPU generator are pinned (digest of the bool mask): a faster implementation
    must draw the very same masks (trimming, top-up and large-grid paths included)."""
    g = torch.Generator().manual_seed(seed)
    assert _mask_digest(block_patch_masking(batch, grid, ratio, generator=g, **kwargs).mask) == digest


def _grid_strings(mask: torch.Tensor, gh: int, gw: int) -> list[list[str]]:
    return [["".join("x" if v else "." for v in row) for row in m] for m in mask.view(-1, gh, gw).tolist()]


def test_pinned_small_masks() -> None:
    pm = block_patch_masking(2, (4, 6), 0.5, generator=torch.Generator().manual_seed(7))
    assert _grid_strings(pm.mask, 4, 6) == [
        ["xxxx..", "..xx..", "..xxx.", "..xxx."],
        ["..xx..", "..xx..", ".xxxx.", ".xxxx."],
    ]
    # one single-patch candidate, the rest topped up ring by ring around it
    pm = block_patch_masking(
        2,
        (5, 5),
        0.3,
        num_candidates=1,
        min_block_patches=1,
        max_block_patches=1,
        generator=torch.Generator().manual_seed(11),
    )
    assert _grid_strings(pm.mask, 5, 5) == [
        [".....", "...x.", "..xxx", "..xxx", "...x."],
        ["xxx..", "xxx..", "xx...", ".....", "....."],
    ]


@pytest.mark.parametrize("grid", [(1, 1), (1, 6), (5, 1), (4, 4), (6, 9), (20, 3)])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
def test_ring_reach_matches_growing_ring_by_ring(grid: tuple[int, int], density: float) -> None:
    """The distance-transform ring count equals growing the area one 4-neighbour ring at a time."""
    gh, gw = grid
    taken = torch.rand(3, gh, gw, generator=torch.Generator().manual_seed(gh * 31 + gw)) < density
    for steps in sorted({1, 3, min(gh + gw, 16)}):
        want = []
        for grid_taken in taken.tolist():
            reached = [row[:] for row in grid_taken]
            count = [[0] * gw for _ in range(gh)]
            for _ in range(steps):
                reached = [
                    [
                        reached[r][c]
                        or any(
                            0 <= r + dr < gh and 0 <= c + dc < gw and reached[r + dr][c + dc]
                            for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))
                        )
                        for c in range(gw)
                    ]
                    for r in range(gh)
                ]
                count = [[count[r][c] + reached[r][c] for c in range(gw)] for r in range(gh)]
            want.append(count)
        got = _ring_reach(taken, steps)
        assert got.dtype == torch.float32
        assert torch.equal(got, torch.tensor(want, dtype=torch.float32))
