"""Absolute position-embedding tables and their bicubic resampling to other patch grids."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["resample_pos_embed"]


def resample_pos_embed(
    pos_embed: Tensor,
    new_grid: tuple[int, int],
    *,
    old_grid: tuple[int, int] | None = None,
    num_prefix_tokens: int = 1,
) -> Tensor:
    """Resample a ViT position table to another patch grid.

    Args:
        pos_embed: ``[1, P + gh*gw, D]``: ``P = num_prefix_tokens`` entries (CLS, ...) first,
            then the grid in row-major order.
        new_grid: target ``(gh', gw')``.
        old_grid: source grid; ``None`` assumes a square grid.
        num_prefix_tokens: leading entries kept as they are.
    Returns:
        ``[1, P + gh'*gw', D]`` in ``pos_embed.dtype``. The grid part is resampled with
        bicubic interpolation (``align_corners=False``) computed in float32 (float64 stays
        float64); the prefix entries are copied. Identity when the grids already match.
    """
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must have shape [1, P + N, D], got {list(pos_embed.shape)}")
    n = pos_embed.shape[1] - num_prefix_tokens
    if old_grid is None:
        side = round(n**0.5)
        if side * side != n:
            raise ValueError(
                f"pos_embed holds {n} grid positions (after {num_prefix_tokens} prefix tokens), "
                "which is not a square grid; pass old_grid"
            )
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != n:
        raise ValueError(f"old_grid {tuple(old_grid)} does not match the {n} grid positions of pos_embed")
    new_grid = (int(new_grid[0]), int(new_grid[1]))
    if tuple(old_grid) == new_grid:
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    acc = torch.float64 if grid.dtype == torch.float64 else torch.float32
    d = grid.shape[-1]
    grid = grid.to(acc).reshape(1, old_grid[0], old_grid[1], d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], d).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)
