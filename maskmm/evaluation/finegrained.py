"""Fine-grained alignment: does the true caption outscore captions that change one attribute?"""

from __future__ import annotations

import torch

from .._checks import check_floating, check_tensor

__all__ = ["distractor_accuracy"]


def distractor_accuracy(
    true_scores: torch.Tensor,
    distractor_scores: dict[str, torch.Tensor],
    distractor_valid: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Per-attribute accuracy of scoring the true caption above its distractors.

    Args:
        true_scores: ``[N]`` score of each image with its true caption (e.g. ITM match prob).
        distractor_scores: attribute name -> ``[N, K]`` scores of the same image with K captions
            that differ from the true one in exactly that attribute.
        distractor_valid: attribute -> ``bool [N, K]`` which distractor slots exist (padding
            otherwise); default all valid.
    Returns:
        attribute -> fp32 accuracy in percent over the samples with at least one valid
        distractor for it (a sample is correct when the true score is strictly greater than
        every valid distractor's), ``"<attr>_count"`` the number of such samples, and
        ``"mean"`` the unweighted mean over attributes that have samples (NaN if none). An
        attribute with no sample gets NaN.
    """
    check_floating("true_scores", true_scores, ndim=1)
    n = true_scores.shape[0]
    out: dict[str, torch.Tensor] = {}
    accs = []
    for attr, scores in distractor_scores.items():
        check_floating(f"distractor_scores[{attr!r}]", scores, ndim=2)
        check_tensor(f"distractor_scores[{attr!r}]", scores, shape=(n, None))
        if distractor_valid is not None and attr in distractor_valid:
            valid = check_tensor(
                f"distractor_valid[{attr!r}]",
                distractor_valid[attr],
                shape=tuple(scores.shape),
                dtype=torch.bool,
            )
        else:
            valid = torch.ones_like(scores, dtype=torch.bool)
        best = scores.float().masked_fill(~valid, float("-inf")).amax(dim=1) if scores.shape[1] else None
        has = valid.any(dim=1)
        if best is None:
            correct = torch.zeros(n, dtype=torch.bool, device=true_scores.device)
        else:
            correct = true_scores.float() > best
        count = has.sum()
        acc = (correct & has).sum().float() / count.clamp(min=1) * 100.0
        acc = torch.where(count > 0, acc, torch.full_like(acc, float("nan")))
        out[attr] = acc
        out[f"{attr}_count"] = count
        accs.append(acc)
    # NaN-skipping mean; NaN when no attribute has samples (or there are no attributes)
    stacked = torch.stack(accs) if accs else torch.empty(0, device=true_scores.device)
    out["mean"] = stacked.nanmean()
    return out
