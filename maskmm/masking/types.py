"""Result types of the masking strategies and the drop-and-restore helpers.

Conventions: a masking mask is ``bool [B, N]`` with ``True`` = hidden from the student, to be
predicted. Patch maskers that allow dropping tokens (MAE style) also return

- ``ids_keep`` ``long [B, N_keep]``: the visible patch indices of each row, ascending;
- ``ids_restore`` ``long [B, N]``: position of each patch in ``cat([kept, masked])`` order, where
  the kept part is ``ids_keep`` and the masked part lists the masked patches ascending.

So ``restore_tokens(gather_tokens(x, ids_keep), ids_restore, fill)`` gives back ``x`` at visible
positions and ``fill`` at masked ones.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from maskmm._checks import check_same_device, check_tensor

__all__ = [
    "ImageMasking",
    "JointMaskingOutput",
    "MaskedView",
    "PatchMasking",
    "TokenMasking",
    "gather_tokens",
    "patch_masking_from_mask",
    "restore_tokens",
]


class PatchMasking(NamedTuple):
    """Patch-level masking with drop/restore indices.

    Attributes:
        mask: bool ``[B, N]``, ``True`` = hidden (to predict). Every row has the same count.
        ids_keep: long ``[B, N_keep]``, visible patch indices, ascending (spatial order kept).
        ids_restore: long ``[B, N]``, index of each patch in ``cat([kept, masked])`` order.
    """

    mask: Tensor
    ids_keep: Tensor
    ids_restore: Tensor


class TokenMasking(NamedTuple):
    """BERT-style text masking.

    Attributes:
        input_ids: long ``[B, L]``, corrupted ids (mask token / random token / kept).
        mask: bool ``[B, L]``, ``True`` = to predict.
        labels: long ``[B, L]``, the original id where ``mask``, ``-100`` elsewhere.
    """

    input_ids: Tensor
    mask: Tensor
    labels: Tensor


class ImageMasking(NamedTuple):
    """What an image masker produced for one batch of images.

    Attributes:
        images: ``[B, C, H, W]``; the input itself for patch maskers (the encoder drops or replaces
            patches using ``patches``), the corrupted images for pixel maskers.
        mask: bool ``[B, N]`` patch-level mask (``N = (H / p) * (W / p)``), ``True`` = to predict.
            All ``False`` for a clean view.
        patches: :class:`PatchMasking` for patch maskers (equal counts per row), else ``None``.
        pixel_mask: bool ``[B, H, W]`` for pixel maskers, else ``None``.
    """

    images: Tensor
    mask: Tensor
    patches: PatchMasking | None = None
    pixel_mask: Tensor | None = None


class MaskedView(NamedTuple):
    """One (image, text) input to the student: either side may be masked or clean."""

    image: ImageMasking
    text: TokenMasking


class JointMaskingOutput(NamedTuple):
    """Output of :class:`~maskmm.masking.JointMasker`.

    Attributes:
        views: ``mode="joint"``: one view, both modalities masked (MAMO).
            ``mode="separate"``: two views, ``(masked image, clean text)`` then
            ``(clean image, masked text)`` (MaskVLM).
        mode: the mode that produced them.
    """

    views: tuple[MaskedView, ...]
    mode: str


def gather_tokens(x: Tensor, ids: Tensor) -> Tensor:
    """Gather tokens along the sequence axis: ``out[b, k] = x[b, ids[b, k]]``.

    Args:
        x: ``[B, N, D]`` tokens of any dtype.
        ids: long ``[B, K]`` indices in ``[0, N)`` (e.g. ``PatchMasking.ids_keep``).
    Returns:
        ``[B, K, D]``; differentiable with respect to ``x``.
    """
    check_tensor("x", x, ndim=3)
    check_tensor("ids", ids, shape=(x.shape[0], None), dtype=torch.long)
    check_same_device(x=x, ids=ids)
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def restore_tokens(x_kept: Tensor, ids_restore: Tensor, fill: Tensor) -> Tensor:
    """Scatter kept tokens back to their positions and put ``fill`` at the masked ones.

    Args:
        x_kept: ``[B, K, D]`` states of the visible tokens, in ``ids_keep`` order.
        ids_restore: long ``[B, N]`` from :class:`PatchMasking`.
        fill: ``[D]`` or ``[1, 1, D]`` (one shared, e.g. learnable, mask token) or ``[B, N - K, D]``
            (one vector per masked position, in ascending masked-position order). Cast to
            ``x_kept.dtype``.
    Returns:
        ``[B, N, D]``; differentiable with respect to ``x_kept`` and ``fill``.
    """
    check_tensor("x_kept", x_kept, ndim=3)
    b, k, d = x_kept.shape
    check_tensor("ids_restore", ids_restore, shape=(b, None), dtype=torch.long)
    n = ids_restore.shape[1]
    if k > n:
        raise ValueError(
            f"x_kept has {k} tokens but ids_restore only covers {n} positions ([B, N] with N >= K)"
        )
    check_tensor("fill", fill)
    if fill.shape == (d,) or fill.shape == (1, 1, d):
        fill_full = fill.reshape(1, 1, d).expand(b, n - k, d)
    elif fill.shape == (b, n - k, d):
        fill_full = fill
    else:
        raise ValueError(
            f"fill must have shape [{d}], [1, 1, {d}] or [{b}, {n - k}, {d}], got {list(fill.shape)}"
        )
    check_same_device(x_kept=x_kept, ids_restore=ids_restore, fill=fill)
    full = torch.cat([x_kept, fill_full.to(x_kept.dtype)], dim=1)
    return torch.gather(full, 1, ids_restore.unsqueeze(-1).expand(-1, -1, d))


def patch_masking_from_mask(mask: Tensor, num_masked: int | None = None) -> PatchMasking:
    """Build :class:`PatchMasking` (``ids_keep``, ``ids_restore``) from a bool mask.

    Args:
        mask: bool ``[B, N]``, ``True`` = masked; every row must have the same count.
        num_masked: that count, if known. When ``None`` it is read from the mask, which costs one
            host synchronisation and checks that all rows agree.
    Raises:
        ValueError: rows differ in their count (only checked when ``num_masked`` is ``None``).
    """
    check_tensor("mask", mask, ndim=2, dtype=torch.bool)
    b, n = mask.shape
    if num_masked is None:
        counts = mask.sum(dim=1)
        if b > 0 and bool((counts != counts[0]).any()):
            raise ValueError(
                "mask must have the same number of True entries in every row to give ids_keep/ids_restore, "
                f"got counts {counts.tolist()}"
            )
        num_masked = int(counts[0]) if b > 0 else 0
    elif not isinstance(num_masked, int) or not 0 <= num_masked <= n:
        raise ValueError(f"num_masked must be an int in [0, {n}], got {num_masked!r}")
    # Stable sort of 0 (kept) before 1 (masked): both parts stay in ascending position order.
    order = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)
    ids_keep = order[:, : n - num_masked]
    ids_restore = torch.empty_like(order).scatter_(
        1, order, torch.arange(n, device=mask.device).expand(b, n).contiguous()
    )
    return PatchMasking(mask=mask, ids_keep=ids_keep, ids_restore=ids_restore)
