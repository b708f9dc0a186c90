"""Masked-token term (MLM): masked tokens predicted from (fused) text states, optional distillation."""

from __future__ import annotations

from torch import Tensor, nn

from maskmm._checks import check_bool, check_ratio
from maskmm.losses.masked_token import masked_token_loss
from maskmm.losses.types import LossOutput

from .base import LossTerm, share_of_global_mean

__all__ = ["MaskedTokenTerm"]


class MaskedTokenTerm(LossTerm):
    """Cross-entropy of the masked tokens (:func:`~maskmm.losses.masked_token_loss`), with ALBEF's
    optional distillation from teacher logits.

    Args:
        head: vocabulary head ``[M, D] -> [M, V]`` (runs on the masked rows only).
        distill: with ``alpha > 0``, mix in the teacher's soft labels: ``(1 - alpha) * CE(labels) +
            alpha * CE(softmax(teacher_logits))`` (``forward`` then reads ``teacher_logits``).

    ``forward(text_states [B, L, D], labels long [B, L], *, teacher_logits=None, alpha=0.0,
    global_count=None)``: ``labels`` hold the target id at masked positions and ``-100`` elsewhere;
    ``teacher_logits``: ``[M, V]`` at the masked positions in row-major order (or ``[B, L, V]``).
    The loss is this rank's share of the mean over all ranks' masked tokens (``global_count``: their
    number when known, e.g. masks drawn for the global batch; ``None``: all-reduced when distributed,
    see :func:`~maskmm.losses.terms.share_of_global_mean`). No masked token gives 0 (graph-connected).
    Stats: ``accuracy``, ``num_masked`` (this rank).
    """

    def __init__(self, head: nn.Module, *, distill: bool = False) -> None:
        super().__init__()
        if not callable(head):
            raise TypeError(f"head must be a module [M, D] -> [M, V], got {type(head).__name__}")
        self.head = head
        self.distill = check_bool("distill", distill)

    def teacher_reads(self, alpha: float = 0.0) -> frozenset[str]:
        return frozenset({"teacher_logits"}) if self.distill and alpha > 0 else frozenset()

    def forward(
        self,
        text_states: Tensor,
        labels: Tensor,
        *,
        teacher_logits: Tensor | None = None,
        alpha: float = 0.0,
        global_count: Tensor | None = None,
    ) -> LossOutput:
        alpha = check_ratio("alpha", alpha, allow_one=True)
        soft = None
        if "teacher_logits" in self.teacher_reads(alpha):
            if teacher_logits is None:
                raise ValueError(f"distillation with alpha={alpha} > 0 needs teacher_logits")
            soft = teacher_logits
        out = masked_token_loss(
            text_states,
            labels,
            self.head,
            soft_targets=soft,
            soft_targets_are_logits=True,
            alpha=alpha if soft is not None else 0.0,
        )
        return share_of_global_mean(out, out.stats["num_masked"], global_count)

    def extra_repr(self) -> str:
        return f"distill={self.distill}"
