"""Code prediction term (SemMIM / iBOT): student code scores against the teacher's code distribution."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from maskmm._checks import check_positive_float
from maskmm.losses.prototype import prototype_loss
from maskmm.losses.types import LossOutput

from .base import LossTerm, patch_states, share_of_global_mean

__all__ = ["CodePredictionTerm"]


class CodePredictionTerm(LossTerm):
    """``-sum_k q_k log softmax(s / tau_s)_k`` over the scored positions
    (:func:`~maskmm.losses.prototype_loss`).

    Args:
        head: optional module from the input of ``forward`` to the code scores ``[..., K]`` (e.g. a
            code head followed by the prototypes); ``None``: the input is the scores.
        student_temperature: ``tau_s > 0``.
        teacher_temperature: ``None``: ``teacher`` holds probabilities; a float: it holds logits,
            turned into ``softmax(teacher / teacher_temperature)``.

    ``forward(x, teacher, mask=None, *, global_count=None)``:

    - local (patch) codes: ``x [B, P + N, D]`` (leading tokens such as CLS before the ``N`` patches
      are dropped before the head), ``teacher [B, N, K]`` and ``mask bool [B, N]`` (``True`` =
      scored, e.g. the masked patches; ``None``: all of them);
    - global codes: ``x [B, D]``, ``teacher [B, K]``, ``mask`` ``None`` or ``bool [B]``.

    ``teacher`` is constant. ``global_count``: scored positions over all ranks, or ``None``
    (all-reduced when distributed); the loss is this rank's share of the mean over all ranks' scored
    positions. Stats: ``num_scored``, ``teacher_entropy``, ``student_entropy``, ``agreement``.
    """

    def __init__(
        self,
        head: Callable[[Tensor], Tensor] | None = None,
        *,
        student_temperature: float = 0.1,
        teacher_temperature: float | None = None,
    ) -> None:
        super().__init__()
        if head is not None and not callable(head):
            raise TypeError(f"head must be a module or None, got {type(head).__name__}")
        self.head = head
        self.student_temperature = check_positive_float("student_temperature", student_temperature)
        if teacher_temperature is not None:
            teacher_temperature = check_positive_float("teacher_temperature", teacher_temperature)
        self.teacher_temperature = teacher_temperature

    def forward(
        self, x: Tensor, teacher: Tensor, mask: Tensor | None = None, *, global_count: Tensor | None = None
    ) -> LossOutput:
        if x.dim() == 3:
            x = patch_states(x, teacher.shape[1])
        logits = self.head(x) if self.head is not None else x
        out = prototype_loss(
            logits,
            teacher,
            mask,
            student_temperature=self.student_temperature,
            teacher_temperature=self.teacher_temperature,
        )
        return share_of_global_mean(out, out.stats["num_scored"], global_count)

    def extra_repr(self) -> str:
        t_s, t_t = self.student_temperature, self.teacher_temperature
        return f"student_temperature={t_s}, teacher_temperature={t_t}"
