"""Pixel targets: patchify / unpatchify and per-patch normalised pixels (MAE style).

Layout: patch ``n = i * w + j`` is the ``(i, j)`` cell of the ``h x w`` grid
(row-major, as ViT patch tokens); within a patch the ``patch * patch * C``
values are ordered (row, column, channel).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from maskmm._checks import check_bool, check_floating, check_int, check_positive_float, check_tensor

__all__ = ["PixelTargets", "patchify", "pixel_targets", "unpatchify"]


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``images [B, C, H, W]`` -> ``[B, (H/p)*(W/p), p*p*C]`` (differentiable, dtype kept).

    ``H`` and ``W`` must be multiples of ``patch``.
    """
    images = check_tensor("images", images, ndim=4)
    p = check_int("patch", patch, minimum=1)
    b, c, height, width = images.shape
    if height % p or width % p:
        raise ValueError(f"images height and width must be multiples of patch={p}, got {list(images.shape)}")
    h, w = height // p, width // p
    x = images.reshape(b, c, h, p, w, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, h * w, p * p * c)


def unpatchify(x: torch.Tensor, patch: int, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Exact inverse of :func:`patchify`: ``[B, N, p*p*C]`` -> ``[B, C, h*p, w*p]``.

    Args:
        x: patch rows; the last size must be a multiple of ``patch**2``.
        patch: patch side ``p``.
        grid: ``(h, w)`` patch grid with ``h * w = N``; ``None`` requires ``N`` to
            be a perfect square.
    """
    x = check_tensor("x", x, ndim=3)
    p = check_int("patch", patch, minimum=1)
    b, n, d = x.shape
    if d % (p * p):
        raise ValueError(f"x last size must be a multiple of patch**2 = {p * p}, got shape {list(x.shape)}")
    c = d // (p * p)
    if grid is None:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"x has N = {n} patches, not a square grid; pass grid=(h, w)")
        h = w = side
    else:
        if not (isinstance(grid, (tuple, list)) and len(grid) == 2):
            raise TypeError(f"grid must be a pair (h, w) of ints, got {grid!r}")
        h = check_int("grid[0]", grid[0], minimum=0)
        w = check_int("grid[1]", grid[1], minimum=0)
        if h * w != n:
            raise ValueError(f"grid {tuple(grid)} holds {h * w} patches but x has N = {n}")
    y = x.reshape(b, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4)
    return y.reshape(b, c, h * p, w * p)


def pixel_targets(
    images: torch.Tensor, patch: int, *, normalize: bool = True, eps: float = 1e-6, unbiased: bool = True
) -> torch.Tensor:
    """Per-patch pixel targets ``[B, N, p*p*C]`` in fp32, detached.

    With ``normalize`` each patch is standardised over its own ``p*p*C`` values:
    ``(x - mean) / sqrt(var + eps)`` (``unbiased`` variance by default, as MAE).
    A constant patch gives 0. ``p*p*C == 1`` with ``unbiased`` is undefined and
    raises.
    """
    images = check_floating("images", images, ndim=4)
    eps = check_positive_float("eps", eps)
    check_bool("normalize", normalize)
    check_bool("unbiased", unbiased)
    with torch.no_grad():
        x = patchify(images.detach(), patch).float()
        if not normalize:
            return x
        if unbiased and x.shape[-1] < 2:
            raise ValueError("unbiased variance needs at least 2 values per patch; use unbiased=False")
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, unbiased=unbiased, keepdim=True)
        return (x - mean) * torch.rsqrt(var + eps)


class PixelTargets(nn.Module):
    """Module form of :func:`pixel_targets` (no parameters)."""

    def __init__(
        self, patch: int, *, normalize: bool = True, eps: float = 1e-6, unbiased: bool = True
    ) -> None:
        super().__init__()
        self.patch = check_int("patch", patch, minimum=1)
        self.normalize = check_bool("normalize", normalize)
        self.eps = check_positive_float("eps", eps)
        self.unbiased = check_bool("unbiased", unbiased)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images [B, C, H, W]`` -> fp32 ``[B, N, p*p*C]`` (detached)."""
        return pixel_targets(
            images, self.patch, normalize=self.normalize, eps=self.eps, unbiased=self.unbiased
        )

    def extra_repr(self) -> str:
        return f"patch={self.patch}, normalize={self.normalize}, eps={self.eps}, unbiased={self.unbiased}"
