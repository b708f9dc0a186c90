"""Text-guided patch masking (SemMIM style): hide the patches most relevant to the caption.

Relevance scores ``[B, N]`` (e.g. text-to-patch attention averaged over heads and words, or
patch-text similarity) rank the patches; the top ``n_mask = floor(ratio * N + 0.5)`` (capped at
``N - 1``) are masked in every row.

Stochasticity (our choice, configurable): with ``temperature = T > 0`` the ranking key is
``score + T * g`` with ``g`` i.i.d. standard Gumbel noise. Taking the top-k of these keys samples
``n_mask`` patches without replacement with probabilities proportional to ``softmax(score / T)``
(the Gumbel-top-k trick), so the same image is masked differently each time while relevant patches
stay more likely. ``T = 0`` is the deterministic top-k (ties broken towards lower patch index).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from maskmm._checks import check_generator, check_int, check_ratio, check_same_device, check_tensor
from maskmm.masking._common import grid_of, num_to_mask
from maskmm.masking.types import ImageMasking, PatchMasking, patch_masking_from_mask

__all__ = ["TextGuidedPatchMasker", "text_guided_patch_masking"]


def _check_temperature(temperature: object) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a float, got {type(temperature).__name__}")
    t = float(temperature)
    if not t >= 0.0 or t == float("inf"):
        raise ValueError(f"temperature must be a finite float >= 0, got {temperature}")
    return t


def text_guided_patch_masking(
    scores: Tensor,
    ratio: float,
    *,
    temperature: float = 0.0,
    valid: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> PatchMasking:
    """Mask the ``n_mask`` most relevant patches of each row (optionally with Gumbel noise).

    Args:
        scores: floating ``[B, N]`` relevance of each patch to the text (any scale; treated as logits
            when ``temperature > 0``). Detached: no gradient flows through the masking.
        ratio: in ``[0, 1)``; ``n_mask = floor(ratio * N + 0.5)`` capped at ``N - 1``, the same in
            every row.
        temperature: Gumbel noise scale, ``>= 0``; ``0`` = deterministic top-k.
        valid: optional bool ``[B, N]``, ``True`` = the patch may be masked (e.g. ``False`` on padding).
            Invalid patches rank below every valid one, so they are never masked while the row has at
            least ``n_mask`` valid patches. A row with fewer valid patches masks all of them and fills
            the remaining count with invalid patches in ascending index order (the count is part of
            the :class:`PatchMasking` contract).
        generator: optional ``torch.Generator`` on ``scores``' device (used only when ``temperature > 0``).
    Returns:
        :class:`PatchMasking`.
    """
    check_tensor("scores", scores, ndim=2)
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating-point tensor, got {scores.dtype}")
    b, n = scores.shape
    if n < 1:
        raise ValueError(f"scores must have shape [B, N] with N >= 1, got {list(scores.shape)}")
    ratio = check_ratio("ratio", ratio)
    t = _check_temperature(temperature)
    if valid is not None:
        check_tensor("valid", valid, shape=(b, n), dtype=torch.bool)
    check_same_device(scores=scores, valid=valid)
    check_generator("generator", generator, scores.device)

    n_mask = num_to_mask(ratio, n)
    key = scores.detach().to(torch.float32)
    if t > 0.0:
        u = torch.rand(b, n, generator=generator, device=scores.device)
        tiny = torch.finfo(torch.float32).tiny
        gumbel = -torch.log(-torch.log(u.clamp(min=tiny, max=1.0 - 1e-7)))
        key = key + t * gumbel
    if valid is not None:
        key = key.masked_fill(~valid, float("-inf"))
    # Descending stable sort: ties (incl. all invalid patches at -inf) go to the lower index.
    order = torch.argsort(key, dim=1, descending=True, stable=True)
    mask = torch.zeros(b, n, dtype=torch.bool, device=scores.device).scatter_(1, order[:, :n_mask], True)
    return patch_masking_from_mask(mask, n_mask)


class TextGuidedPatchMasker(nn.Module):
    """Module form of :func:`text_guided_patch_masking`.

    Args:
        ratio: fraction of patches to mask, in ``[0, 1)``.
        temperature: Gumbel noise scale (``0`` = deterministic).
        patch_size: pixel size of a patch, used by :meth:`mask_images` to check the grid.
    """

    def __init__(self, ratio: float, *, temperature: float = 0.0, patch_size: int = 16) -> None:
        super().__init__()
        self.ratio = check_ratio("ratio", ratio)
        self.temperature = _check_temperature(temperature)
        self.patch_size = check_int("patch_size", patch_size, minimum=1)

    def forward(
        self, scores: Tensor, *, valid: Tensor | None = None, generator: torch.Generator | None = None
    ) -> PatchMasking:
        return text_guided_patch_masking(
            scores, self.ratio, temperature=self.temperature, valid=valid, generator=generator
        )

    def mask_images(
        self, images: Tensor, *, scores: Tensor | None = None, generator: torch.Generator | None = None
    ) -> ImageMasking:
        """Mask ``images [B, C, H, W]`` guided by ``scores [B, N]`` (required)."""
        gh, gw = grid_of(images, self.patch_size)
        if scores is None:
            raise ValueError("scores (text-to-patch relevance [B, N]) are required by TextGuidedPatchMasker")
        check_tensor("scores", scores, shape=(images.shape[0], gh * gw))
        pm = self(scores, generator=generator)
        return ImageMasking(images=images, mask=pm.mask, patches=pm)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, temperature={self.temperature}, patch_size={self.patch_size}"
