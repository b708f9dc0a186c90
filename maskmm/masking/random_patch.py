"""Uniform random patch masking (MAE / MAMO style)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from maskmm._checks import check_int, check_ratio
from maskmm.masking._common import grid_of, num_to_mask, resolve_device
from maskmm.masking.types import ImageMasking, PatchMasking, patch_masking_from_mask

__all__ = ["RandomPatchMasker", "random_patch_masking"]


def random_patch_masking(
    batch: int,
    num_patches: int,
    ratio: float,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> PatchMasking:
    """Mask ``n_mask`` patches of every row uniformly at random.

    ``n_mask = floor(ratio * N + 0.5)`` (round half up), capped at ``N - 1`` so at least one patch
    stays visible; ``ratio = 0`` masks nothing. Every row has exactly ``n_mask`` masked patches and
    every ``n_mask``-subset is equally likely.

    Args:
        batch: ``B >= 0``.
        num_patches: ``N >= 1``.
        ratio: in ``[0, 1)``.
        device: where the result lives; default: the generator's device, else CPU.
        generator: optional ``torch.Generator`` on that device.
    Returns:
        :class:`PatchMasking` with ``mask [B, N]``, ``ids_keep [B, N - n_mask]`` (ascending),
        ``ids_restore [B, N]``.
    """
    check_int("batch", batch)
    check_int("num_patches", num_patches, minimum=1)
    ratio = check_ratio("ratio", ratio)
    dev = resolve_device(device, generator)
    n_mask = num_to_mask(ratio, num_patches)
    noise = torch.rand(batch, num_patches, generator=generator, device=dev)
    masked_ids = noise.argsort(dim=1)[:, :n_mask]
    mask = torch.zeros(batch, num_patches, dtype=torch.bool, device=dev).scatter_(1, masked_ids, True)
    return patch_masking_from_mask(mask, n_mask)


class RandomPatchMasker(nn.Module):
    """Module form of :func:`random_patch_masking`.

    Args:
        ratio: fraction of patches to mask, in ``[0, 1)``.
        patch_size: pixel size of a patch, used by :meth:`mask_images` to derive the grid.
    """

    def __init__(self, ratio: float, *, patch_size: int = 16) -> None:
        super().__init__()
        self.ratio = check_ratio("ratio", ratio)
        self.patch_size = check_int("patch_size", patch_size, minimum=1)

    def forward(
        self,
        batch: int,
        num_patches: int,
        *,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> PatchMasking:
        return random_patch_masking(batch, num_patches, self.ratio, device=device, generator=generator)

    def mask_images(
        self, images: Tensor, *, scores: Tensor | None = None, generator: torch.Generator | None = None
    ) -> ImageMasking:
        """Mask the patches of ``images [B, C, H, W]`` (``scores`` is ignored)."""
        gh, gw = grid_of(images, self.patch_size)
        pm = self(images.shape[0], gh * gw, device=images.device, generator=generator)
        return ImageMasking(images=images, mask=pm.mask, patches=pm)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, patch_size={self.patch_size}"
