"""One call that masks an image-text batch, jointly (MAMO) or one modality per view (MaskVLM)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from maskmm._checks import check_tensor
from maskmm.masking._common import grid_of
from maskmm.masking.tokens import IGNORE_INDEX
from maskmm.masking.types import ImageMasking, JointMaskingOutput, MaskedView, TokenMasking

__all__ = ["MASKING_MODES", "ImageMasker", "JointMasker", "clean_image", "clean_text"]

MASKING_MODES = ("joint", "separate")


@runtime_checkable
class ImageMasker(Protocol):
    """What :class:`JointMasker` needs from an image masker.

    Implemented by :class:`RandomPatchMasker`, :class:`BlockPatchMasker`,
    :class:`TextGuidedPatchMasker` and :class:`PixelBlockMasker`.
    """

    patch_size: int

    def mask_images(
        self, images: Tensor, *, scores: Tensor | None = None, generator: torch.Generator | None = None
    ) -> ImageMasking: ...


def clean_image(images: Tensor, patch_size: int) -> ImageMasking:
    """An unmasked image view: the images themselves and an all-``False`` mask ``[B, N]``."""
    gh, gw = grid_of(images, patch_size)
    mask = torch.zeros(images.shape[0], gh * gw, dtype=torch.bool, device=images.device)
    return ImageMasking(images=images, mask=mask, patches=None, pixel_mask=None)


def clean_text(input_ids: Tensor) -> TokenMasking:
    """An unmasked text view: the ids themselves, an all-``False`` mask, labels all ``-100``."""
    return TokenMasking(
        input_ids=input_ids,
        mask=torch.zeros_like(input_ids, dtype=torch.bool),
        labels=torch.full_like(input_ids, IGNORE_INDEX),
    )


class JointMasker(nn.Module):
    """Mask an image-text batch in one call.

    Args:
        image_masker: an :class:`ImageMasker` (e.g. ``RandomPatchMasker(0.75)`` for MAMO,
            ``PixelBlockMasker(0.6, block_size=32)`` for MaskVLM).
        text_masker: a :class:`~maskmm.masking.TokenMasker` or any module/callable with the signature
            ``(input_ids, valid, *, word_ids=None, generator=None) -> TokenMasking``.
        mode: ``"joint"`` (MAMO): one view with both modalities masked. ``"separate"`` (MaskVLM): two
            views, ``(masked image, clean text)`` then ``(clean image, masked text)``.

    The image is masked first, then the text, from the same ``generator``, so one seed fixes both.
    """

    def __init__(self, image_masker: ImageMasker, text_masker: nn.Module, mode: str = "joint") -> None:
        super().__init__()
        if not isinstance(image_masker, ImageMasker):
            raise TypeError(
                "image_masker must provide patch_size and mask_images(images, *, scores, generator), "
                f"got {type(image_masker).__name__}"
            )
        if not callable(text_masker):
            raise TypeError(f"text_masker must be callable, got {type(text_masker).__name__}")
        if mode not in MASKING_MODES:
            raise ValueError(f"mode must be one of {MASKING_MODES}, got {mode!r}")
        self.image_masker = image_masker
        self.text_masker = text_masker
        self.mode = mode

    def forward(
        self,
        images: Tensor,
        input_ids: Tensor,
        valid: Tensor,
        *,
        word_ids: Tensor | None = None,
        patch_scores: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> JointMaskingOutput:
        """Mask ``images [B, C, H, W]`` and text ``input_ids long [B, L]`` (``valid bool [B, L]``).

        Args:
            word_ids: optional long ``[B, L]`` for whole-word text masking.
            patch_scores: optional ``[B, N]`` text-to-patch relevance (text-guided image masking).
            generator: optional ``torch.Generator`` on the inputs' device.
        Returns:
            :class:`JointMaskingOutput` with one (``"joint"``) or two (``"separate"``) views.
        """
        check_tensor("images", images, ndim=4)
        check_tensor("input_ids", input_ids, shape=(images.shape[0], None))
        image_view = self.image_masker.mask_images(images, scores=patch_scores, generator=generator)
        text_view = self.text_masker(input_ids, valid, word_ids=word_ids, generator=generator)
        if self.mode == "joint":
            views: tuple[MaskedView, ...] = (MaskedView(image=image_view, text=text_view),)
        else:
            views = (
                MaskedView(image=image_view, text=clean_text(input_ids)),
                MaskedView(image=clean_image(images, self.image_masker.patch_size), text=text_view),
            )
        return JointMaskingOutput(views=views, mode=self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
