"""Targets for masked modeling: what the student is asked to predict.

- :func:`top_k_layer_targets`: data2vec-style average of normalised top-K teacher layers.
- :func:`masked_feature_targets`: teacher features at masked patches (padded ``[B, M, D]``),
  with :func:`gather_masked`, :func:`masked_positions`, :func:`select_by_mask`.
- :func:`patchify` / :func:`unpatchify` / :func:`pixel_targets`: (normalised) pixel targets.
- :func:`sharpen_and_center`, :class:`PrototypeProjection`, :class:`PrototypeTargets`:
  DINO-style code distributions for SemMIM.

Every target is detached and fp32.
"""

from __future__ import annotations

from .features import (
    MaskedFeatures,
    MaskedFeatureTargets,
    gather_masked,
    masked_feature_targets,
    masked_positions,
    select_by_mask,
)
from .layers import TopKLayerTargets, top_k_layer_targets
from .pixels import PixelTargets, patchify, pixel_targets, unpatchify
from .prototypes import PrototypeProjection, PrototypeTargets, sharpen_and_center

__all__ = [
    "MaskedFeatureTargets",
    "MaskedFeatures",
    "PixelTargets",
    "PrototypeProjection",
    "PrototypeTargets",
    "TopKLayerTargets",
    "gather_masked",
    "masked_feature_targets",
    "masked_positions",
    "patchify",
    "pixel_targets",
    "select_by_mask",
    "sharpen_and_center",
    "top_k_layer_targets",
    "unpatchify",
]
