"""Generic evaluation: retrieval recall, re-ranking, fine-grained distractors, grounding."""

from __future__ import annotations

from .finegrained import distractor_accuracy
from .grounding import box_patch_mask, grad_cam, grounding_scores
from .rerank import itm_itc_score, rerank_topk
from .retrieval import positive_mask, retrieval_ranks, retrieval_recall

__all__ = [
    "box_patch_mask",
    "distractor_accuracy",
    "grad_cam",
    "grounding_scores",
    "itm_itc_score",
    "positive_mask",
    "rerank_topk",
    "retrieval_ranks",
    "retrieval_recall",
]
