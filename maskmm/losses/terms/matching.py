"""Image-text matching term (ALBEF): hard negatives over the global batch, fused text CLS, 2-way head."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from maskmm.distributed import all_gather_no_grad, all_gather_with_grad, world_info
from maskmm.losses.matching import PairEncoder, hard_negative_matching
from maskmm.losses.types import LossOutput

from .base import LossTerm, share_of_global_mean

__all__ = ["MatchingTerm", "fused_text_cls", "itc_similarity"]


@torch.no_grad()
def itc_similarity(image_feat: Tensor, text_feat: Tensor, temperature: Tensor | float) -> Tensor:
    """fp32 ``[B, B]`` image-to-text similarities ``image_feat @ text_feat.T / temperature``, detached
    (the hard-negative sampling distribution of ITM)."""
    temp = temperature.detach().float() if isinstance(temperature, Tensor) else float(temperature)
    return image_feat.detach().float() @ text_feat.detach().float().t() / temp


def fused_text_cls(fusion: Callable[..., object], pool: str = "cls") -> PairEncoder:
    """The :data:`~maskmm.losses.PairEncoder` of a fusion encoder: the input ``[N, D]`` of the matching head.

    ``pool="cls"``: the fused text CLS state (ALBEF). ``"mean"``: the mean of the fused states of the
    valid text tokens and, where the fusion returns image states (merged or co-attention fusion), of
    the valid image tokens.
    """
    if pool not in _ITM_POOLS:
        raise ValueError(f"pool must be one of {list(_ITM_POOLS)}, got {pool!r}")

    def fuse(image: Tensor, image_valid: Tensor | None, text: Tensor, text_valid: Tensor) -> Tensor:
        out = fusion(image, image_valid, text, text_valid)
        if pool == "cls":
            return out.text[:, 0]
        states, valid = out.text, text_valid
        if out.image is not None:
            iv = image_valid if image_valid is not None else text_valid.new_ones(out.image.shape[:2])
            states, valid = torch.cat([out.image, states], 1), torch.cat([iv, valid], 1)
        w = valid.unsqueeze(-1).to(states.dtype)
        return (states * w).sum(1) / w.sum(1).clamp(min=1.0)

    return fuse


_ITM_POOLS = ("cls", "mean")


class MatchingTerm(LossTerm):
    """ALBEF's ITM over the global batch (:func:`~maskmm.losses.hard_negative_matching`).

    Args:
        fusion: fusion encoder ``(image, image_valid, text, text_valid) -> output with .text [N, Lt, D]``;
            the fused text CLS state is the pair's representation (:func:`fused_text_cls`).
        head: matching head ``[N, D] -> [N, 2]`` (index 1 = match).
        pool: ``"cls"`` (ALBEF) or ``"mean"``: the head's input (see :func:`fused_text_cls`).

    ``forward(image_states [b, Li, Dv], text_states [b, Lt, Dt], text_valid bool [b, Lt], *,
    similarity=None, image_ids=None, generator=None, hardness=1.0, image_valid=None, positives=None)``:
    this rank's rows. The states are gathered over the ``W`` ranks with gradient (text validity and ids
    without), one hard negative text per image and one hard negative image per text are drawn for all ``W
    * b`` rows from ``similarity`` (``[W * b, W * b]`` image-to-text similarities of the global batch,
    e.g. :meth:`ContrastiveTerm.similarity`; ``None``: uniformly among the valid negatives), mixed with
    uniform draws by ``hardness``, and this rank's ``3b`` pairs are fused and scored (negatives may come
    from any rank). Every rank must pass the same batch size ``b``, captions of one length
    (:func:`maskmm.distributed.pad_to_common_length`) and a ``generator`` in the same state: the draws are
    those of one process on the global batch. ``positives`` (``bool [W * b, W * b]``, the same on every
    rank, :func:`maskmm.losses.batch_positives`): texts true of other images of the global batch, never
    drawn as their negatives. The loss is this rank's share of the mean over all scored pairs
    (:func:`maskmm.distributed.rescale_to_global_mean`; the mean itself in one process).
    Stats: ``accuracy``, ``pos_acc``, ``neg_acc`` of this rank's pairs.
    """

    def __init__(self, fusion: nn.Module, head: nn.Module, *, pool: str = "cls") -> None:
        super().__init__()
        for name, part in (("fusion", fusion), ("head", head)):
            if not callable(part):
                raise TypeError(f"{name} must be a module, got {type(part).__name__}")
        self.fusion = fusion
        self.head = head
        self.pair_state = fused_text_cls(fusion, pool)  # validates pool
        self.pool = pool

    def forward(
        self,
        image_states: Tensor,
        text_states: Tensor,
        text_valid: Tensor,
        *,
        similarity: Tensor | None = None,
        image_ids: Tensor | None = None,
        generator: torch.Generator | None = None,
        hardness: float = 1.0,
        image_valid: Tensor | None = None,
        positives: Tensor | None = None,
    ) -> LossOutput:
        rank, _ = world_info()
        b = image_states.shape[0]
        out = hard_negative_matching(
            all_gather_with_grad(image_states),
            None if image_valid is None else all_gather_no_grad(image_valid),
            all_gather_with_grad(text_states),
            all_gather_no_grad(text_valid),
            similarity,
            fuse=self.pair_state,
            head=self.head,
            image_ids=None if image_ids is None else all_gather_no_grad(image_ids),
            generator=generator,
            hardness=hardness,
            rows=(rank * b, (rank + 1) * b),
            positives=positives,
        )
        n_local, n_total = out.stats.pop("num_scored"), out.stats.pop("num_scored_total")
        return share_of_global_mean(out, n_local, n_total)
