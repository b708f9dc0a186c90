"""pytest-benchmark suite: maskmm's vectorised block masking against a BEiT-style per-sample generator.

Both draw block masks on a 14x14 patch grid (ViT-B/16 at 224 px) with blocks of at least 16
patches and aspect ratios in [0.3, 1/0.3], for one sample and for a batch of 256, at BEiT's
75 of 196 patches, at ratio 0.4 (78 patches) and at ratio 0.75 (147 patches):

- ``maskmm``: :func:`maskmm.masking.block_patch_masking`, one call for the whole batch (returns the
  mask and the keep / restore indices, exactly ``n_mask`` patches per sample).
- ``beit_loop``: :class:`BeitStyleBlockMasking` below, BEiT's published algorithm run once per
  sample in Python (the usual data-loader setting), masks stacked into one ``bool [B, N]`` tensor.
  It may stop short of the requested count (``extra_info["mean_masked"]`` records how far).

CPU only (both run on the host in a data loader)::

    python -m pytest benchmarks/test_bench_masking.py --benchmark-only -q
    python -m pytest benchmarks/test_bench_masking.py --benchmark-only -q -k "b256"

The repository's test run (``testpaths = ["tests"]``) does not collect this file.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from maskmm.masking import block_patch_masking

GRID = (14, 14)
MIN_BLOCK = 16  # BEiT's pretraining setting
ASPECT = (0.3, 1 / 0.3)
CASES = {"beit75": 75, "r0.40": 78, "r0.75": 147}  # masked patches of 196 (ratio 0.4 -> 78, 0.75 -> 147)
BATCHES = (1, 256)


class BeitStyleBlockMasking:
    """BEiT's block-wise masking, one sample at a time (written from the published description).

    Blocks are added until ``num_mask`` patches are masked: each block proposes up to 10 random
    rectangles (area uniform in ``[min_block, min(max_block, remaining)]``, aspect ratio log-uniform
    in ``aspect``, top-left corner uniform inside the grid) and keeps the first one that masks at
    least one new patch without exceeding the remaining count. A block whose 10 attempts all fail
    ends the sample, which may then have fewer than ``num_mask`` masked patches.

    Args:
        grid: ``(height, width)`` in patches.
        num_mask: patches to mask per sample.
        min_block: smallest block area (patches).
        max_block: largest block area; ``None`` = ``num_mask``.
        aspect: ``(low, high)`` range of height / width.
        seed: seed of the Python RNG.
    """

    def __init__(
        self,
        grid: tuple[int, int],
        num_mask: int,
        *,
        min_block: int = 16,
        max_block: int | None = None,
        aspect: tuple[float, float] = (0.3, 1 / 0.3),
        seed: int = 0,
    ) -> None:
        self.height, self.width = grid
        self.num_mask = num_mask
        self.min_block = min_block
        self.max_block = num_mask if max_block is None else max_block
        self.log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
        self.rng = random.Random(seed)

    def _add_block(self, mask: np.ndarray, limit: int) -> int:
        """Try up to 10 rectangles; mask the first acceptable one and return its new patches (0: none)."""
        for _ in range(10):
            area = self.rng.uniform(self.min_block, limit)
            ratio = math.exp(self.rng.uniform(*self.log_aspect))
            h = round(math.sqrt(area * ratio))
            w = round(math.sqrt(area / ratio))
            if h >= self.height or w >= self.width:
                continue
            top = self.rng.randint(0, self.height - h)
            left = self.rng.randint(0, self.width - w)
            window = mask[top : top + h, left : left + w]
            new = h * w - int(window.sum())
            if 0 < new <= limit:
                window[...] = True
                return new
        return 0

    def sample(self) -> np.ndarray:
        """One ``bool [height, width]`` mask."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        count = 0
        while count < self.num_mask:
            added = self._add_block(mask, min(self.num_mask - count, self.max_block))
            if added == 0:
                break
            count += added
        return mask

    def __call__(self, batch: int) -> torch.Tensor:
        """``bool [batch, height * width]`` masks, one Python-loop sample each."""
        masks = np.stack([self.sample().reshape(-1) for _ in range(batch)])
        return torch.from_numpy(masks)


def _ratio(num_mask: int) -> float:
    """A ratio whose rounded count ``floor(ratio * N + 0.5)`` is ``num_mask``."""
    return num_mask / (GRID[0] * GRID[1])


@pytest.mark.parametrize("impl", ["maskmm", "beit_loop"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("batch", BATCHES, ids=[f"b{b}" for b in BATCHES])
def test_block_masking(benchmark, batch: int, case: str, impl: str) -> None:
    num_mask = CASES[case]
    benchmark.group = f"block-masking 14x14 {case} ({num_mask}/196) batch {batch}"
    if impl == "maskmm":
        g = torch.Generator().manual_seed(0)
        ratio = _ratio(num_mask)

        def draw() -> torch.Tensor:
            return block_patch_masking(
                batch, GRID, ratio, min_block_patches=MIN_BLOCK, aspect_ratio=ASPECT, generator=g
            ).mask

    else:
        gen = BeitStyleBlockMasking(GRID, num_mask, min_block=MIN_BLOCK, aspect=ASPECT, seed=0)

        def draw() -> torch.Tensor:
            return gen(batch)

    mask = draw()  # warm-up outside the timed rounds
    assert mask.shape == (batch, GRID[0] * GRID[1]) and mask.dtype == torch.bool
    masks = benchmark(draw)
    counts = masks.sum(1).double()
    if impl == "maskmm":
        assert bool((counts == num_mask).all())
    else:
        assert bool((counts <= num_mask).all())
    benchmark.extra_info.update(
        impl=impl,
        batch=batch,
        grid=list(GRID),
        num_mask=num_mask,
        mean_masked=float(counts.mean()),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
    )
