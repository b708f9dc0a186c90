"""Loss terms: the objectives of a pretraining step as reusable modules.

Each term (:class:`LossTerm`) is an ``nn.Module`` built from its own options and the parts it
calls; its ``forward`` takes the tensors it reads (student states, masks, teacher outputs, a
generator) and returns a :class:`~maskmm.losses.LossOutput`. Under data parallelism each term's
loss is this rank's share of the loss of one process on the global batch (gathers, global-batch
draws and :func:`maskmm.distributed.rescale_to_global_mean`, as each term documents), so that
averaging the gradients over ranks gives the single-process gradient.

- :class:`ContrastiveTerm`: ITC (pooling, projections, online or momentum keys, queue, distillation).
- :class:`MatchingTerm`: ITM with ALBEF hard negatives over the global batch.
- :class:`MaskedTokenTerm`: MLM on (fused) text states, optional distillation.
- :class:`FusionRegressionTerm`: MRM, top-K teacher fusion layers at masked image and text positions.
- :class:`FeatureRegressionTerm`: MIM, a decoder to the teacher's image features at masked patches.
- :class:`PixelReconstructionTerm`: pixel reconstruction at masked regions (MAE / MaskVLM).
- :class:`CodePredictionTerm`: code (prototype) prediction against the teacher's codes (SemMIM).
"""

from __future__ import annotations

from .base import LossTerm, patch_states, share_of_global_mean
from .code import CodePredictionTerm
from .contrastive import ContrastiveTerm, pool_states
from .feature_regression import FeatureRegressionTerm
from .fusion_regression import FusionRegressionTerm, FusionStates
from .masked_token import MaskedTokenTerm
from .matching import MatchingTerm, fused_text_cls, itc_similarity
from .pixel import PixelReconstructionTerm

__all__ = [
    "CodePredictionTerm",
    "ContrastiveTerm",
    "FeatureRegressionTerm",
    "FusionRegressionTerm",
    "FusionStates",
    "LossTerm",
    "MaskedTokenTerm",
    "MatchingTerm",
    "PixelReconstructionTerm",
    "fused_text_cls",
    "itc_similarity",
    "patch_states",
    "pool_states",
    "share_of_global_mean",
]
