"""Pixel-block masking (MaskVLM style): hide square pixel blocks of the input image.

The image is tiled from its top-left corner into ``block_size x block_size`` pixel blocks
(``ceil(H / b) x ceil(W / b)`` of them; when ``b`` does not divide ``H`` or ``W`` the last row /
column of blocks is clipped at the border). Exactly ``n_blocks = floor(ratio * B_total + 0.5)``
blocks (capped at ``B_total - 1``) are chosen uniformly per sample. The encoder sees the whole
corrupted image (see :func:`apply_pixel_mask`), so no patches are dropped.

Patch mask: a patch is masked iff *all* of its pixels are masked. Block and patch sizes must nest:
``block_size % patch_size == 0`` (a block covers whole patches) or ``patch_size % block_size == 0``
(a patch holds whole blocks and is masked only when all of them are); other combinations would
leave patches partly masked and raise ``ValueError``. ``H`` and ``W`` must be multiples of
``patch_size``. Per-row patch counts can differ (clipped blocks, or small blocks that only
sometimes fill a patch), so the result carries masks only, no ``ids_keep``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from maskmm._checks import check_int, check_ratio, check_same_device, check_tensor
from maskmm.masking._common import num_to_mask, resolve_device, select_per_row
from maskmm.masking.types import ImageMasking

__all__ = ["PixelBlockMasker", "PixelMasking", "apply_pixel_mask", "pixel_block_masking"]


class PixelMasking(NamedTuple):
    """Result of :func:`pixel_block_masking`.

    Attributes:
        pixel_mask: bool ``[B, H, W]``, ``True`` = hidden pixel.
        patch_mask: bool ``[B, N]``, ``N = (H / p) * (W / p)`` raster order; ``True`` iff every pixel
            of the patch is hidden.
        block_mask: bool ``[B, ceil(H / b), ceil(W / b)]``; exactly ``n_blocks`` per row.
    """

    pixel_mask: Tensor
    patch_mask: Tensor
    block_mask: Tensor


def _check_sizes(image_size: object, block_size: int, patch_size: int) -> tuple[int, int]:
    if not isinstance(image_size, Sequence) or len(image_size) != 2:
        raise TypeError(f"image_size must be a pair (H, W) of ints, got {image_size!r}")
    h = check_int("image_size[0]", image_size[0], minimum=1)
    w = check_int("image_size[1]", image_size[1], minimum=1)
    check_int("block_size", block_size, minimum=1)
    check_int("patch_size", patch_size, minimum=1)
    if block_size % patch_size and patch_size % block_size:
        raise ValueError(
            f"block_size={block_size} and patch_size={patch_size} must nest (one a multiple of the other); "
            "otherwise patches would be partly masked"
        )
    if h % patch_size or w % patch_size:
        raise ValueError(f"image_size={(h, w)} must be divisible by patch_size={patch_size}")
    return h, w


def pixel_block_masking(
    batch: int,
    image_size: tuple[int, int],
    ratio: float,
    *,
    block_size: int = 32,
    patch_size: int = 16,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> PixelMasking:
    """Hide exactly ``floor(ratio * n_total + 0.5)`` (at most ``n_total - 1``) pixel blocks per sample.

    Args:
        batch: ``B >= 0``.
        image_size: ``(H, W)``, multiples of ``patch_size``.
        ratio: fraction of blocks, in ``[0, 1)``; ``0`` hides nothing.
        block_size: block side in pixels; must nest with ``patch_size`` (see module docstring).
        patch_size: ViT patch side in pixels.
        device: where the result lives; default: the generator's device, else CPU.
        generator: optional ``torch.Generator`` on that device.
    Returns:
        :class:`PixelMasking` (``pixel_mask [B, H, W]``, ``patch_mask [B, N]``, ``block_mask``).
    """
    check_int("batch", batch)
    h, w = _check_sizes(image_size, block_size, patch_size)
    ratio = check_ratio("ratio", ratio)
    dev = resolve_device(device, generator)

    hb, wb = -(-h // block_size), -(-w // block_size)
    n_blocks = num_to_mask(ratio, hb * wb)
    counts = torch.full((batch,), n_blocks, dtype=torch.long, device=dev)
    eligible = torch.ones(batch, hb * wb, dtype=torch.bool, device=dev)
    block_mask = select_per_row(eligible, counts, generator).view(batch, hb, wb)

    pixel_mask = (
        block_mask[:, :, None, :, None]
        .expand(batch, hb, block_size, wb, block_size)
        .reshape(batch, hb * block_size, wb * block_size)[:, :h, :w]
        .contiguous()
    )
    gh, gw = h // patch_size, w // patch_size
    if block_size % patch_size == 0:
        r = block_size // patch_size
        patch_mask = (
            block_mask[:, :, None, :, None].expand(batch, hb, r, wb, r).reshape(batch, hb * r, wb * r)
        )
        patch_mask = patch_mask[:, :gh, :gw].reshape(batch, gh * gw)
    else:  # patch_size % block_size == 0, hence H and W are multiples of block_size
        r = patch_size // block_size
        patch_mask = block_mask.view(batch, gh, r, gw, r).all(dim=4).all(dim=2).reshape(batch, gh * gw)
    return PixelMasking(pixel_mask=pixel_mask, patch_mask=patch_mask, block_mask=block_mask)


def apply_pixel_mask(images: Tensor, pixel_mask: Tensor, fill: float | Tensor = 0.0) -> Tensor:
    """Replace hidden pixels by ``fill``.

    Args:
        images: floating ``[B, C, H, W]``.
        pixel_mask: bool ``[B, H, W]`` or ``[B, 1, H, W]``, ``True`` = hidden.
        fill: a number, or a tensor ``[C]`` (per channel, e.g. a learnable parameter or the data mean)
            or ``[]``; cast to ``images.dtype``. Gradients flow to ``images`` (visible pixels) and to a
            tensor ``fill`` (hidden pixels).
    Returns:
        ``[B, C, H, W]`` corrupted images.
    """
    check_tensor("images", images, ndim=4)
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor, got {images.dtype}")
    b, c, h, w = images.shape
    check_tensor("pixel_mask", pixel_mask, dtype=torch.bool)
    if pixel_mask.shape == (b, h, w):
        pm = pixel_mask.unsqueeze(1)
    elif pixel_mask.shape == (b, 1, h, w):
        pm = pixel_mask
    else:
        raise ValueError(
            f"pixel_mask must have shape [{b}, {h}, {w}] or [{b}, 1, {h}, {w}], got {list(pixel_mask.shape)}"
        )
    if isinstance(fill, Tensor):
        if fill.shape not in ((), (c,)):
            raise ValueError(
                f"fill must be a number or a tensor of shape [] or [{c}], got {list(fill.shape)}"
            )
        check_same_device(images=images, pixel_mask=pixel_mask, fill=fill)
        return torch.where(pm, fill.to(images.dtype).reshape(1, -1, 1, 1), images)
    if isinstance(fill, bool) or not isinstance(fill, (int, float)):
        raise TypeError(f"fill must be a number or a torch.Tensor, got {type(fill).__name__}")
    check_same_device(images=images, pixel_mask=pixel_mask)
    return images.masked_fill(pm, float(fill))


class PixelBlockMasker(nn.Module):
    """Hide pixel blocks of an image batch and fill them.

    Args:
        ratio: fraction of blocks to hide, in ``[0, 1)``.
        block_size: block side in pixels (MaskVLM: 32).
        patch_size: ViT patch side in pixels.
        fill: value for hidden pixels (initial value when learnable).
        learnable_fill: if ``True``, ``self.fill`` is a learnable ``[channels]`` parameter.
        channels: image channels (for the learnable fill).
    """

    def __init__(
        self,
        ratio: float,
        *,
        block_size: int = 32,
        patch_size: int = 16,
        fill: float = 0.0,
        learnable_fill: bool = False,
        channels: int = 3,
    ) -> None:
        super().__init__()
        self.ratio = check_ratio("ratio", ratio)
        self.block_size = check_int("block_size", block_size, minimum=1)
        self.patch_size = check_int("patch_size", patch_size, minimum=1)
        if block_size % patch_size and patch_size % block_size:
            raise ValueError(
                f"block_size={block_size} and patch_size={patch_size} must nest (one a multiple of the other)"
            )
        if isinstance(fill, bool) or not isinstance(fill, (int, float)):
            raise TypeError(f"fill must be a float, got {type(fill).__name__}")
        check_int("channels", channels, minimum=1)
        self.fill: float | nn.Parameter
        if learnable_fill:
            self.fill = nn.Parameter(torch.full((channels,), float(fill)))
        else:
            self.fill = float(fill)

    def forward(self, images: Tensor, *, generator: torch.Generator | None = None) -> ImageMasking:
        """Mask ``images [B, C, H, W]``; returns corrupted images, patch mask and pixel mask."""
        check_tensor("images", images, ndim=4)
        b, _, h, w = images.shape
        resolve_device(images.device, generator)
        pm = pixel_block_masking(
            b,
            (h, w),
            self.ratio,
            block_size=self.block_size,
            patch_size=self.patch_size,
            device=images.device,
            generator=generator,
        )
        masked = apply_pixel_mask(images, pm.pixel_mask, self.fill)
        return ImageMasking(images=masked, mask=pm.patch_mask, patches=None, pixel_mask=pm.pixel_mask)

    def mask_images(
        self, images: Tensor, *, scores: Tensor | None = None, generator: torch.Generator | None = None
    ) -> ImageMasking:
        """Same as :meth:`forward` (``scores`` is ignored)."""
        return self(images, generator=generator)

    def extra_repr(self) -> str:
        learn = isinstance(self.fill, nn.Parameter)
        return (
            f"ratio={self.ratio}, block_size={self.block_size}, patch_size={self.patch_size}, "
            f"learnable_fill={learn}"
        )
