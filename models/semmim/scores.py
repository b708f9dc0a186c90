"""Text-to-patch relevance for text-guided masking (SemMIM).

Our choice of score: the cosine similarity between the caption's global feature and every patch
feature, both in the image-text contrastive space (the momentum model's ITC projections applied to
its text CLS state and to its patch states). The scores feed
:func:`maskmm.masking.text_guided_patch_masking`, whose Gumbel noise temperature then acts on
cosines in ``[-1, 1]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from maskmm._checks import check_floating, check_same_device

__all__ = ["text_patch_similarity"]


@torch.no_grad()
def text_patch_similarity(patch_feat: Tensor, text_feat: Tensor) -> Tensor:
    """Cosine similarity of each patch to its caption.

    Args:
        patch_feat: ``[B, N, E]`` patch features (any float dtype).
        text_feat: ``[B, E]`` caption features (e.g. the projected text CLS state).
    Returns:
        fp32 ``[B, N]`` in ``[-1, 1]``, detached (masking passes no gradient).
    """
    check_floating("patch_feat", patch_feat, ndim=3)
    b, _, e = patch_feat.shape
    check_floating("text_feat", text_feat, shape=(b, e))
    check_same_device(patch_feat=patch_feat, text_feat=text_feat)
    p = F.normalize(patch_feat.float(), dim=-1)
    t = F.normalize(text_feat.float(), dim=-1)
    return torch.einsum("bne,be->bn", p, t)
