"""Re-ranking of the top-k candidates of a similarity matrix with a (costlier) pair scorer."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._checks import check_floating, check_int

__all__ = ["itm_itc_score", "rerank_topk"]


def itm_itc_score(itm_logits: torch.Tensor, itc_sim: torch.Tensor | None, itc_weight: float) -> torch.Tensor:
    """``fp32 [M]`` re-ranking score of ``M`` pairs from their ITM logits ``[M, 2]`` (1 = match).

    ``itc_weight == 0``: the ITM match probability (ALBEF re-ranks by the ITM score alone).
    ``itc_weight > 0``: the ITM log-odds ``logit_1 - logit_0`` plus ``itc_weight`` times the pair's
    ITC cosine similarity ``itc_sim [M]``: with ``itc_weight = 1 / temperature`` both terms are logits
    and their sum scores a pair by both heads (a product of their likelihood ratios), so a
    matching head that is unsure (log-odds near 0) leaves the ITC order in place.
    """
    check_floating("itm_logits", itm_logits, shape=(None, 2))
    logits = itm_logits.float()
    if not itc_weight:
        return logits.softmax(-1)[:, 1]
    if itc_sim is None:
        raise ValueError("itc_weight > 0 needs the pairs' ITC similarities itc_sim")
    check_floating("itc_sim", itc_sim, shape=(logits.shape[0],))
    return logits[:, 1] - logits[:, 0] + itc_weight * itc_sim.float()


def rerank_topk(
    sim: torch.Tensor,
    k: int,
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    chunk_size: int = 256,
    sim_weight: float = 0.0,
) -> torch.Tensor:
    """Replace each row's top-``k`` scores by ``score_fn`` scores (ITM re-ranking, as ALBEF).

    Args:
        sim: ``[Q, C]`` first-stage scores (e.g. ITC), query rows.
        k: candidates re-scored per query (clamped to ``C``; ``0`` returns ``sim`` unchanged).
        score_fn: ``(query_idx long [M], cand_idx long [M]) -> [M]`` scores of those pairs;
            called on chunks of at most ``chunk_size`` pairs.
        sim_weight: weight of the first-stage score added to the re-ranked score (0 = ``score_fn``
            alone, as ALBEF; see :func:`itm_itc_score` for combining ITM with ITC).
    Returns:
        ``[Q, C]`` fp32: the top-k entries hold the new scores; every other entry is below all
        of them and keeps its first-stage order, so R@K for K > k still reflects the first stage.
    """
    check_floating("sim", sim, ndim=2)
    check_int("k", k)
    check_int("chunk_size", chunk_size, minimum=1)
    if isinstance(sim_weight, bool) or not isinstance(sim_weight, (int, float)) or sim_weight < 0:
        raise ValueError(f"sim_weight must be a float >= 0, got {sim_weight!r}")
    s = sim.float()
    q, c = s.shape
    k = min(k, c)
    if k == 0 or q == 0:
        return s.clone()
    top_val, top_idx = s.topk(k, dim=1)  # [Q, k]
    qi = torch.arange(q, device=s.device)[:, None].expand(q, k).reshape(-1)
    ci = top_idx.reshape(-1)
    parts = []
    for start in range(0, qi.numel(), chunk_size):
        out = score_fn(qi[start : start + chunk_size], ci[start : start + chunk_size])
        parts.append(out.detach().float().reshape(-1))
    new = torch.cat(parts).view(q, k)
    if sim_weight:
        new = new + sim_weight * top_val
    # everything outside the top-k sits strictly below the lowest new score, in first-stage order
    outside = s - s.amax() + new.amin() - 1.0
    return outside.scatter(1, top_idx, new)
