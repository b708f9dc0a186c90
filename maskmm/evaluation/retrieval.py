"""Image-text retrieval recall (R@K) in both directions from a similarity matrix."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._checks import check_floating, check_int, check_tensor

__all__ = ["positive_mask", "retrieval_ranks", "retrieval_recall"]


def positive_mask(image_ids: torch.Tensor, text_image_ids: torch.Tensor) -> torch.Tensor:
    """``bool [Ni, Nt]``: text ``t`` describes image ``i`` iff ``text_image_ids[t] == image_ids[i]``."""
    check_tensor("image_ids", image_ids, ndim=1)
    check_tensor("text_image_ids", text_image_ids, ndim=1)
    return image_ids[:, None] == text_image_ids[None, :]


def retrieval_ranks(scores: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """0-based rank of each query's best-scored positive among its candidates.

    Args:
        scores: ``[Q, C]`` query-by-candidate scores (higher = better).
        positives: ``bool [Q, C]`` correct candidates (several per query allowed).
    Returns:
        ``long [Q]``: the number of *negatives* scoring at least as high as the best positive
        (ties count against the query, so constant scores never look good). A query with no
        positive gets rank ``C`` (never a hit).
    """
    check_floating("scores", scores, ndim=2)
    check_tensor("positives", positives, shape=tuple(scores.shape), dtype=torch.bool)
    s = scores.float()
    best_pos = s.masked_fill(~positives, float("-inf")).amax(dim=1, keepdim=True)
    rank = ((s >= best_pos) & ~positives).sum(dim=1)
    has_pos = positives.any(dim=1)
    return torch.where(has_pos, rank, torch.full_like(rank, s.shape[1]))


def retrieval_recall(
    sim_i2t: torch.Tensor,
    image_ids: torch.Tensor | None = None,
    text_image_ids: torch.Tensor | None = None,
    ks: Sequence[int] = (1, 5, 10),
    *,
    positives: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Recall@K for text retrieval (image -> text, ``tr``) and image retrieval (text -> image, ``ir``).

    Args:
        sim_i2t: ``[Ni, Nt]`` image-to-text scores (ITC similarities or re-ranked ITM scores).
        image_ids: ``[Ni]`` id of each image.
        text_image_ids: ``[Nt]`` id of the image each text describes (several texts may share one).
        ks: cut-offs.
        positives: instead of ids, an explicit ``bool [Ni, Nt]`` relevance matrix (e.g. "the
            caption is true of the image" when captions can describe several images).
    Returns:
        ``{"tr_r1", "tr_r5", ..., "ir_r1", ..., "r_mean"}`` as fp32 tensors in percent (no host sync).
        An image counts as a hit if ANY of its captions is within the top K; a text counts if
        its image is. See :func:`retrieval_ranks` for ties.
    """
    check_floating("sim_i2t", sim_i2t, ndim=2)
    if positives is None:
        if image_ids is None or text_image_ids is None:
            raise ValueError("give image_ids and text_image_ids, or positives")
        check_tensor("image_ids", image_ids, shape=(sim_i2t.shape[0],))
        check_tensor("text_image_ids", text_image_ids, shape=(sim_i2t.shape[1],))
        pos = positive_mask(image_ids, text_image_ids)
    else:
        pos = check_tensor("positives", positives, shape=tuple(sim_i2t.shape), dtype=torch.bool)
    for i, k in enumerate(ks):
        check_int(f"ks[{i}]", k, minimum=1)
    tr = retrieval_ranks(sim_i2t, pos)
    ir = retrieval_ranks(sim_i2t.t(), pos.t())
    out: dict[str, torch.Tensor] = {}
    for name, ranks in (("tr", tr), ("ir", ir)):
        for k in ks:
            out[f"{name}_r{k}"] = (ranks < k).float().mean() * 100.0
    out["r_mean"] = torch.stack(list(out.values())).mean()
    return out
