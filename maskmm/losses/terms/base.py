"""What every loss term shares: the :class:`LossTerm` base and the global-mean rescaling."""

from __future__ import annotations

from torch import Tensor, nn

from maskmm.distributed import rescale_to_global_mean
from maskmm.losses.types import LossOutput

__all__ = ["LossTerm", "patch_states", "share_of_global_mean"]


class LossTerm(nn.Module):
    """Base of the loss terms of :mod:`maskmm.losses.terms`.

    A term is one objective of a pretraining step: an ``nn.Module`` built from its own options and the
    parts it calls (heads, decoders, the contrastive module), whose ``forward`` takes the tensors it
    reads (student states, masks, teacher outputs, a generator) and returns a
    :class:`~maskmm.losses.LossOutput`. A term reads no global configuration; under data parallelism
    its loss is this rank's share of the mean over the global batch (see each term).

    :meth:`teacher_reads` names the teacher inputs of ``forward`` (keyword arguments ``teacher_*``)
    that the term reads at a given distillation weight, so that a step runs the teacher only for
    what its active terms read; the others may be left ``None``.
    """

    def teacher_reads(self, alpha: float = 0.0) -> frozenset[str]:
        """Names of the ``teacher_*`` arguments of ``forward`` read with distillation weight ``alpha``."""
        return frozenset()


def share_of_global_mean(out: LossOutput, local_count: Tensor, global_count: Tensor | None) -> LossOutput:
    """``out`` with its loss (a mean over ``local_count`` items of this rank) turned into this rank's
    share of the mean over all ranks' items (:func:`maskmm.distributed.rescale_to_global_mean`).

    ``global_count``: the number of items over all ranks when every rank knows it (e.g. masks drawn
    for the global batch: no communication); ``None``: summed over the ranks with one all-reduce
    when ``torch.distributed`` is initialised, and the loss is returned unchanged in one process.
    """
    return out._replace(loss=rescale_to_global_mean(out.loss, local_count, global_count))


def patch_states(states: Tensor, num_patches: int) -> Tensor:
    """The last ``num_patches`` tokens of ``states [B, P + N, D]``: the patch tokens after any leading
    (CLS) tokens, whose positions a ``[B, N]`` patch mask covers."""
    if states.dim() != 3 or states.shape[1] < num_patches:
        raise ValueError(
            f"states must have shape [B, P + N, D] with N = {num_patches} patch tokens last, "
            f"got {list(states.shape)}"
        )
    return states[:, states.shape[1] - num_patches :]
