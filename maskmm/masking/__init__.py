"""Masking strategies for masked multimodal pretraining.

Conventions: masking masks are ``bool`` with ``True`` = hidden from the student, to be predicted.
Every strategy is vectorised over the batch, gives exact per-sample counts (``floor(ratio * n + 0.5)``,
see each function for caps and minimums) and takes an optional ``torch.Generator``.

- Patches: :func:`random_patch_masking`, :func:`block_patch_masking`,
  :func:`text_guided_patch_masking` return :class:`PatchMasking` (``mask``, ``ids_keep``,
  ``ids_restore``); :func:`gather_tokens` / :func:`restore_tokens` drop and restore tokens.
- Pixels: :func:`pixel_block_masking` + :func:`apply_pixel_mask`.
- Text: :func:`mask_tokens` (BERT 80/10/10, optional whole-word) returns :class:`TokenMasking`.
- Both: :class:`JointMasker` (``"joint"`` = MAMO, ``"separate"`` = MaskVLM).
"""

from __future__ import annotations

from maskmm.masking.block import BlockPatchMasker, block_patch_masking
from maskmm.masking.joint import MASKING_MODES, ImageMasker, JointMasker, clean_image, clean_text
from maskmm.masking.pixel_block import PixelBlockMasker, PixelMasking, apply_pixel_mask, pixel_block_masking
from maskmm.masking.random_patch import RandomPatchMasker, random_patch_masking
from maskmm.masking.text_guided import TextGuidedPatchMasker, text_guided_patch_masking
from maskmm.masking.tokens import IGNORE_INDEX, TokenMasker, mask_tokens
from maskmm.masking.types import (
    ImageMasking,
    JointMaskingOutput,
    MaskedView,
    PatchMasking,
    TokenMasking,
    gather_tokens,
    patch_masking_from_mask,
    restore_tokens,
)

__all__ = [
    "IGNORE_INDEX",
    "MASKING_MODES",
    "BlockPatchMasker",
    "ImageMasker",
    "ImageMasking",
    "JointMasker",
    "JointMaskingOutput",
    "MaskedView",
    "PatchMasking",
    "PixelBlockMasker",
    "PixelMasking",
    "RandomPatchMasker",
    "TextGuidedPatchMasker",
    "TokenMasker",
    "TokenMasking",
    "apply_pixel_mask",
    "block_patch_masking",
    "clean_image",
    "clean_text",
    "gather_tokens",
    "mask_tokens",
    "patch_masking_from_mask",
    "pixel_block_masking",
    "random_patch_masking",
    "restore_tokens",
    "text_guided_patch_masking",
]
