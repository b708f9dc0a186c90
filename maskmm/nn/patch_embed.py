"""Convolutional patch embedding."""

from __future__ import annotations

from torch import Tensor, nn

from maskmm._checks import check_floating

__all__ = ["PatchEmbed"]


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches -> ``dim`` features:
    ``images [B, C, H, W] -> [B, (H/p)*(W/p), dim]`` in row-major (raster) order.

    ``H`` and ``W`` must be divisible by ``patch_size``.
    """

    def __init__(self, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def grid_size(self, images: Tensor) -> tuple[int, int]:
        """Validate ``images`` and return its patch grid ``(H/p, W/p)``."""
        check_floating("images", images, shape=(None, self.in_chans, None, None))
        h, w = images.shape[-2:]
        p = self.patch_size
        if h % p or w % p or h == 0 or w == 0:
            raise ValueError(
                f"images must have a non-empty height and width divisible by patch_size {p}, "
                f"got shape {list(images.shape)}"
            )
        return h // p, w // p

    def forward(self, images: Tensor) -> Tensor:
        self.grid_size(images)
        return self.proj(images).flatten(2).transpose(1, 2)
