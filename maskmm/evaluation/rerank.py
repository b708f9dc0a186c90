"""Re-ranking of the top-k candidates of a similarity matrix with a (costlier) pair scorer."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._checks import check_floating, check_int

__all__ = ["rerank_topk"]


def rerank_topk(
    sim: torch.Tensor,
    k: int,
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    chunk_size: int = 256,
    add_sim: bool = False,
) -> torch.Tensor:
    """Replace each row's top-``k`` scores by ``score_fn`` scores (ITM re-ranking, as ALBEF).

    Args:
        sim: ``[Q, C]`` first-stage scores (e.g. ITC), query rows.
        k: candidates re-scored per query (clamped to ``C``; ``0`` returns ``sim`` unchanged).
        score_fn: ``(query_idx long [M], cand_idx long [M]) -> [M]`` scores of those pairs;
            called on chunks of at most ``chunk_size`` pairs.
        add_sim: add the first-stage score to the re-ranked score.
    Returns:
        ``[Q, C]`` fp32: the top-k entries hold the new scores; every other entry is below all
        of them and keeps its first-stage order, so R@K for K > k still reflects the first stage.
    """
    check_floating("sim", sim, ndim=2)
    check_int("k", k)
    check_int("chunk_size", chunk_size, minimum=1)
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
    if add_sim:
        new = new + top_val
    # everything outside the top-k sits strictly below the lowest new score, in first-stage order
    outside = s - s.amax() + new.amin() - 1.0
    return outside.scatter(1, top_idx, new)
