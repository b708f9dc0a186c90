"""Masked-modeling, contrastive and matching losses.

Every loss has a functional form returning :class:`LossOutput` ``(loss, stats)`` (fp32
loss, detached fp32 stats, no host synchronisation unless documented) and a thin
``nn.Module``. Losses over masked positions return 0 (graph-connected, zero gradient)
when nothing is masked.

:mod:`maskmm.losses.terms` composes them into the objectives of a pretraining step (ITC, ITM,
MLM, MRM, MIM, pixel reconstruction, code prediction), each a module with its own options.
"""

from __future__ import annotations

from maskmm.losses.contrastive import ImageTextContrastive, contrastive_targets, image_text_contrastive_loss
from maskmm.losses.latent import LatentRegressionLoss, latent_regression_loss
from maskmm.losses.linear_cross_entropy import fused_linear_cross_entropy
from maskmm.losses.masked_token import MaskedTokenLoss, masked_token_loss
from maskmm.losses.matching import (
    HardNegatives,
    ImageTextMatchingLoss,
    PairEncoder,
    hard_negative_matching,
    image_text_matching_loss,
    sample_hard_negatives,
)
from maskmm.losses.pixel import PixelReconstructionLoss, pixel_reconstruction_loss
from maskmm.losses.positives import batch_positives, pair_positives
from maskmm.losses.prototype import PrototypeLoss, prototype_loss
from maskmm.losses.queue import FeatureQueue
from maskmm.losses.terms import (
    CodePredictionTerm,
    ContrastiveTerm,
    FeatureRegressionTerm,
    FusionRegressionTerm,
    LossTerm,
    MaskedTokenTerm,
    MatchingTerm,
    PixelReconstructionTerm,
)
from maskmm.losses.types import LossOutput

__all__ = [
    "CodePredictionTerm",
    "ContrastiveTerm",
    "FeatureQueue",
    "FeatureRegressionTerm",
    "FusionRegressionTerm",
    "HardNegatives",
    "ImageTextContrastive",
    "ImageTextMatchingLoss",
    "LatentRegressionLoss",
    "LossOutput",
    "LossTerm",
    "MaskedTokenLoss",
    "MaskedTokenTerm",
    "MatchingTerm",
    "PairEncoder",
    "PixelReconstructionLoss",
    "PixelReconstructionTerm",
    "PrototypeLoss",
    "batch_positives",
    "contrastive_targets",
    "fused_linear_cross_entropy",
    "hard_negative_matching",
    "image_text_contrastive_loss",
    "image_text_matching_loss",
    "latent_regression_loss",
    "masked_token_loss",
    "pair_positives",
    "pixel_reconstruction_loss",
    "prototype_loss",
    "sample_hard_negatives",
]
