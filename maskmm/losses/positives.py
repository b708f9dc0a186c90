"""Which captions of a batch are true of which images: the positives relation of ITC and ITM.

A positives mask ``bool [N, N]`` over a (global) batch of ``N`` pairs says, at ``[i, j]``, that
caption ``j`` is true of image ``i``. :func:`maskmm.losses.image_text_contrastive_loss` makes such
captions (images) positives of the query instead of negatives, and
:func:`maskmm.losses.sample_hard_negatives` never draws them as matching negatives. The diagonal (the
own pair) is always a positive, whatever the mask says.

:func:`pair_positives` builds the mask from fact ids (:mod:`maskmm.data.facts`): caption ``j`` is
true of image ``i`` when every fact caption ``j`` asserts is a fact of image ``i``.
:func:`batch_positives` does so for a data-parallel global batch (the fact ids of every rank are
gathered, so every rank holds the same mask, the one a single process on the concatenated batch
would build).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from maskmm._checks import check_same_device, check_tensor
from maskmm.distributed import all_gather_no_grad, world_info

__all__ = ["batch_positives", "check_positives", "pair_positives"]


def pair_positives(image_facts: Tensor, caption_facts: Tensor, image_ids: Tensor | None = None) -> Tensor:
    """``bool [Ni, Nc]``: ``[i, j]`` is ``True`` when caption ``j`` is true of image ``i``.

    Args:
        image_facts: ``long [Ni, Fi]`` ids of the facts true of each image, ``-1`` = padding.
        caption_facts: ``long [Nc, Fc]`` ids of the facts each caption asserts, ``-1`` = padding.
        image_ids: ``long [N]`` (needs ``Ni == Nc == N``): pairs of the same image are positives too.

    A caption is true of an image when each of its facts is one of the image's. A caption with no
    fact (an all-padding row) asserts nothing checkable and is true of no image (not of every one).
    The diagonal is not forced here (see :func:`check_positives`' callers).
    """
    check_tensor("image_facts", image_facts, ndim=2, dtype=torch.long)
    check_tensor("caption_facts", caption_facts, ndim=2, dtype=torch.long)
    check_same_device(image_facts=image_facts, caption_facts=caption_facts, image_ids=image_ids)
    ni, nc = image_facts.shape[0], caption_facts.shape[0]
    cap_valid = caption_facts >= 0  # [Nc, Fc]
    # found[i, j, f]: fact f of caption j is a fact of image i
    found = (caption_facts[None, :, :, None] == image_facts[:, None, None, :]).any(-1)
    pos = (found | ~cap_valid[None]).all(-1) & cap_valid.any(-1)[None]
    if image_ids is not None:
        if ni != nc:
            raise ValueError(f"image_ids needs as many images as captions, got {ni} images and {nc} captions")
        check_tensor("image_ids", image_ids, shape=(ni,), dtype=torch.long)
        pos = pos | (image_ids[:, None] == image_ids[None, :])
    return pos


def _pad_columns(x: Tensor, width: int) -> Tensor:
    return F.pad(x, (0, width - x.shape[1]), value=-1)


def batch_positives(
    image_facts: Tensor,
    caption_facts: Tensor,
    *,
    gather: bool = True,
    group: dist.ProcessGroup | None = None,
) -> Tensor:
    """``bool [N, N]``: :func:`pair_positives` of the global batch (``N = world * b``), diagonal set.

    Args:
        image_facts: ``long [b, Fi]`` this rank's image fact ids (``-1`` = padding).
        caption_facts: ``long [b, Fc]`` this rank's caption fact ids.
        gather: gather the fact ids of every rank when distributed (rank ``r``'s rows are
            ``[r * b, (r + 1) * b)``); ranks may pad to different widths (one small collective of
            the widths, then the ids, both without gradient). ``False``: this rank's batch only.
        group: process group of the gathers.
    """
    check_tensor("image_facts", image_facts, ndim=2, dtype=torch.long)
    b = image_facts.shape[0]
    check_tensor("caption_facts", caption_facts, shape=(b, None), dtype=torch.long)
    _, world = world_info(group) if gather else (0, 1)
    if world > 1:
        widths = torch.tensor([image_facts.shape[1], caption_facts.shape[1]], device=image_facts.device)
        wi, wc = all_gather_no_grad(widths[None], group).amax(0).tolist()
        image_facts = all_gather_no_grad(_pad_columns(image_facts, wi), group)
        caption_facts = all_gather_no_grad(_pad_columns(caption_facts, wc), group)
    pos = pair_positives(image_facts, caption_facts)
    return pos | torch.eye(pos.shape[0], dtype=torch.bool, device=pos.device)


def check_positives(positives: Tensor | None, n: int, device: torch.device) -> None:
    """Validate a positives mask ``bool [n, n]`` on ``device`` (``None`` passes)."""
    if positives is not None:
        check_tensor("positives", positives, shape=(n, n), dtype=torch.bool, device=device)
