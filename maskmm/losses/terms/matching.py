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


def fused_text_cls(fusion: Callable[..., object]) -> PairEncoder:
    """The :data:`~maskmm.losses.PairEncoder` of an ALBEF-style fusion encoder: its fused text CLS
    state ``[N, D]`` (the input of the matching head)."""

    def fuse(image: Tensor, image_valid: Tensor | None, text: Tensor, text_valid: Tensor) -> Tensor:
        return fusion(image, image_valid, text, text_valid).text[:, 0]

    return fuse


class MatchingTerm(LossTerm):
    """ALBEF's ITM over the global batch (:func:`~maskmm.losses.hard_negative_matching`).

    Args:
        fusion: fusion encoder ``(image, image_valid, text, text_valid) -> output with .text [N, Lt, D]``;
            the fused text CLS state is the pair's representation (:func:`fused_text_cls`).
        head: matching head ``[N, D] -> [N, 2]`` (index 1 = match).

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

    def __init__(self, fusion: nn.Module, head: nn.Module) -> None:
        super().__init__()
        for name, part in (("fusion", fusion), ("head", head)):
            if not callable(part):
                raise TypeError(f"{name} must be a module, got {type(part).__name__}")
        self.fusion = fusion
        self.head = head

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
            fuse=fused_text_cls(self.fusion),
            head=self.head,
            image_ids=None if image_ids is None else all_gather_no_grad(image_ids),
            generator=generator,
            hardness=hardness,
            rows=(rank * b, (rank + 1) * b),
            positives=positives,
        )
        n_local, n_total = out.stats.pop("num_scored"), out.stats.pop("num_scored_total")
        return share_of_global_mean(out, n_local, n_total)
