"""Pieces of a pretraining step every recipe repeats: batch checks, ALBEF's ITM step, the student
container base, the required-parts check and the step's named losses.

:func:`itc_similarity` and :func:`fused_text_cls` live in :mod:`maskmm.losses.terms` (with
:class:`~maskmm.losses.terms.MatchingTerm`, the ITM step over the global batch as a module) and are
re-exported here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from maskmm._checks import check_floating, check_generator, check_tensor
from maskmm.losses import LossOutput, batch_positives, hard_negative_matching
from maskmm.losses.terms import fused_text_cls, itc_similarity

__all__ = [
    "PartsContainer",
    "StepLosses",
    "batch_pair_positives",
    "check_pair_batch",
    "check_required_parts",
    "fused_text_cls",
    "itc_similarity",
    "itm_step",
]


def check_pair_batch(
    images: Tensor,
    input_ids: Tensor,
    text_valid: Tensor,
    image_ids: Tensor | None,
    generator: torch.Generator | None,
    *,
    itm: bool,
    world: int = 1,
) -> int:
    """Validate one batch of image-caption pairs and return its size ``B``.

    Args:
        images: float ``[B, C, H, W]``; input_ids: long ``[B, L]``; text_valid: bool ``[B, L]``;
        image_ids: long ``[B]`` or ``None``; all on the images' device.
        generator: ``None`` or a generator of that device.
        itm: ITM runs, so the global batch of ``world * B`` pairs needs ``>= 2`` (a negative must
            exist; ``world`` = number of data-parallel ranks that draw negatives from it).
    """
    check_floating("images", images, ndim=4)
    b = images.shape[0]
    check_tensor("input_ids", input_ids, shape=(b, None), dtype=torch.long, device=images.device)
    check_tensor(
        "text_valid", text_valid, shape=tuple(input_ids.shape), dtype=torch.bool, device=images.device
    )
    if image_ids is not None:
        check_tensor("image_ids", image_ids, shape=(b,), dtype=torch.long, device=images.device)
    check_generator("generator", generator, images.device)
    if itm and b * world < 2:
        on_ranks = f" on each of {world} ranks" if world > 1 else ""
        raise ValueError(
            f"ITM needs a batch of at least 2 pairs to draw negatives, got images of batch {b}{on_ranks}"
        )
    return b


def batch_pair_positives(batch: Mapping[str, Tensor]) -> Tensor | None:
    """``bool [W * B, W * B]``: which captions of the global batch are true of which images
    (:func:`maskmm.losses.batch_positives` of the batch's ``image_facts`` and ``caption_facts``), or
    ``None`` when the batch carries no facts (every other pair is then a negative, as before)."""
    has = ("image_facts" in batch, "caption_facts" in batch)
    if has == (False, False):
        return None
    if has != (True, True):
        raise ValueError("batch has one of 'image_facts' and 'caption_facts' but not the other")
    return batch_positives(batch["image_facts"], batch["caption_facts"])


def itm_step(
    image_states: Tensor,
    text_states: Tensor,
    text_valid: Tensor,
    sim_i2t: Tensor | None,
    *,
    fusion: nn.Module,
    head: nn.Module,
    image_ids: Tensor | None = None,
    generator: torch.Generator | None = None,
    hardness: float = 1.0,
    rows: tuple[int, int] | None = None,
    positives: Tensor | None = None,
) -> LossOutput:
    """ALBEF's ITM: :func:`maskmm.losses.hard_negative_matching` on the fused text CLS of ``fusion``,
    negatives drawn from ``sim_i2t [B, B]`` (e.g. :func:`itc_similarity`; ``None``: uniformly), mixed
    with uniform draws by ``hardness``; ``rows`` scores a slice of the ``B`` rows (data parallelism,
    see ``hard_negative_matching``); ``positives [B, B]``: texts true of other images, never their
    negatives."""
    return hard_negative_matching(
        image_states,
        None,
        text_states,
        text_valid,
        sim_i2t,
        fuse=fused_text_cls(fusion),
        head=head,
        image_ids=image_ids,
        generator=generator,
        hardness=hardness,
        rows=rows,
        positives=positives,
    )


class PartsContainer(nn.Module):
    """A module holding named parts (``None`` = absent) that is never called itself: the recipes'
    students, whose parts the objective calls one by one (and the EMA teacher copies by name)."""

    def __init__(self, **parts: nn.Module | None) -> None:
        super().__init__()
        for name, part in parts.items():
            setattr(self, name, part)

    def forward(self, *args: object, **kwargs: object) -> None:  # pragma: no cover
        raise TypeError(f"{type(self).__name__} is a container; call the objective or the parts directly")


def check_required_parts(
    owner: object, required: dict[str, Sequence[str]], enabled: Callable[[str], bool], prefix: str = ""
) -> None:
    """Raise ``ValueError`` when an enabled loss (``enabled(name)``) lacks one of its parts:
    ``required`` maps a loss name to the attribute names of ``owner`` it needs (``None`` = missing)."""
    for loss, parts in required.items():
        for part in parts:
            if enabled(loss) and getattr(owner, part) is None:
                raise ValueError(f"loss {loss!r} is enabled but {prefix}{part} is None")


@dataclasses.dataclass
class StepLosses:
    """The losses of one step (name -> fp32 scalar, attached) and its statistics (name -> detached
    fp32 scalar)."""

    losses: dict[str, Tensor] = dataclasses.field(default_factory=dict)
    stats: dict[str, Tensor] = dataclasses.field(default_factory=dict)

    def add(self, name: str, out: LossOutput) -> None:
        """Record loss ``name`` and its statistics as ``<name>/<stat>``."""
        self.losses[name] = out.loss
        self.stats.update({f"{name}/{k}": v for k, v in out.stats.items()})

    def total(self, order: Sequence[str], weight: Callable[[str], float]) -> Tensor:
        """The weighted sum of the losses (fp32). Orders :attr:`losses` as ``order`` and logs each
        loss as the statistic ``loss_<name>``."""
        self.losses = {k: self.losses[k] for k in order if k in self.losses}
        for k, v in self.losses.items():
            self.stats[f"loss_{k}"] = v.detach().float()
        return sum(weight(k) * v.float() for k, v in self.losses.items())
