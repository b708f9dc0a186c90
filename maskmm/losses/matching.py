"""Image-text matching: hard-negative sampling, the 2-way matching loss and the whole ITM step."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskmm._checks import check_floating, check_generator, check_ratio, check_same_device, check_tensor
from maskmm.losses.positives import check_positives
from maskmm.losses.types import LossOutput, _acc_dtype, _masked_mean, _stat

__all__ = [
    "HardNegatives",
    "ImageTextMatchingLoss",
    "PairEncoder",
    "hard_negative_matching",
    "image_text_matching_loss",
    "sample_hard_negatives",
]

#: ``fuse(image [N, Li, Dv], image_valid bool [N, Li] | None, text [N, Lt, Dt], text_valid bool [N, Lt])
#: -> [N, D]``: one joint representation per (image, text) pair (ALBEF: the fused text CLS state).
PairEncoder = Callable[[Tensor, Tensor | None, Tensor, Tensor], Tensor]


class HardNegatives(NamedTuple):
    """Sampled negatives (``return_flags=True`` form of :func:`sample_hard_negatives`).

    Attributes:
        text_idx: ``long [B]`` negative text for image ``i``.
        image_idx: ``long [B]`` negative image for text ``i``.
        text_fallback: ``bool [B]`` image ``i`` had no valid negative text (fallback used).
        image_fallback: ``bool [B]`` text ``i`` had no valid negative image.
    """

    text_idx: Tensor
    image_idx: Tensor
    text_fallback: Tensor
    image_fallback: Tensor

    def pair_valid(self) -> Tensor:
        """``bool [3B]`` for ALBEF's ``[positives; (neg image, text); (image, neg text)]`` layout of
        :func:`image_text_matching_loss`: rows ``B + i`` pair text ``i`` with its negative image
        ``image_idx[i]`` and rows ``2B + i`` pair image ``i`` with its negative text ``text_idx[i]``;
        ``False`` for pairs built from a fallback."""
        pos = torch.ones_like(self.text_fallback)
        return torch.cat([pos, ~self.image_fallback, ~self.text_fallback])


@torch.no_grad()
def sample_hard_negatives(
    sim_i2t: Tensor,
    sim_t2i: Tensor,
    image_ids: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    return_flags: bool = False,
    hardness: float = 1.0,
    positives: Tensor | None = None,
) -> tuple[Tensor, Tensor] | HardNegatives:
    """Draw one hard negative text per image and one hard negative image per text.

    Row ``i`` of ``sim_i2t`` (scaled similarities of image ``i`` to every text) gives
    the sampling distribution ``softmax(sim_i2t[i])`` restricted to texts whose pair id
    differs from ``image_ids[i]`` and that ``positives`` does not mark as true of image ``i``
    (those have weight 0; without ids or ``positives`` only the diagonal is excluded); row ``j``
    of ``sim_t2i`` likewise excludes the images text ``j`` is true of (column ``j`` of
    ``positives``). Both directions are drawn in ONE ``torch.multinomial`` call.

    ``hardness`` mixes that distribution with the uniform one over the same valid negatives:
    ``hardness * softmax + (1 - hardness) * uniform`` (1 = ALBEF, 0 = random negatives). A
    matching head trained from scratch on the hardest negatives alone can sit at the class
    prior (it predicts "no match" for every pair); easy negatives first give it a signal.

    Fallback (documented choice): a row with no valid negative (every other pair is a positive)
    draws uniformly among the *other* indices ``j != i`` (index ``i`` itself when
    ``B == 1``); such rows are flagged (``return_flags=True``) so the loss can drop them
    (:meth:`HardNegatives.pair_valid`).

    Args:
        sim_i2t: ``[B, B]`` image-to-text similarities (any float dtype; no gradient).
        sim_t2i: ``[B, B]`` text-to-image similarities.
        image_ids: ``long [B]`` pair ids, or ``None`` (every pair distinct).
        generator: RNG for the draw (same seed, same device -> same negatives).
        return_flags: return a :class:`HardNegatives` with fallback flags.
        hardness: weight in ``[0, 1]`` of the similarity-based distribution (see above).
        positives: ``bool [B, B]``, ``[i, j]`` = text ``j`` is true of image ``i``
            (:func:`maskmm.losses.batch_positives`), or ``None``.

    Returns:
        ``(neg_text_idx long [B], neg_image_idx long [B])``, or :class:`HardNegatives`.
    """
    check_floating("sim_i2t", sim_i2t, ndim=2)
    b = sim_i2t.shape[0]
    check_floating("sim_i2t", sim_i2t, shape=(b, b))
    check_floating("sim_t2i", sim_t2i, shape=(b, b))
    if image_ids is not None:
        check_tensor("image_ids", image_ids, shape=(b,), dtype=torch.long)
    device = check_same_device(sim_i2t=sim_i2t, sim_t2i=sim_t2i, image_ids=image_ids)
    check_positives(positives, b, device)
    check_generator("generator", generator, device)
    check_ratio("hardness", hardness, allow_one=True)
    if b == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        flags = torch.zeros(0, dtype=torch.bool, device=device)
        return HardNegatives(empty, empty, flags, flags) if return_flags else (empty, empty)

    eye = torch.eye(b, dtype=torch.bool, device=device)
    same = eye if image_ids is None else image_ids.unsqueeze(0) == image_ids.unsqueeze(1)
    same = same | eye
    if positives is None:
        same = same.unsqueeze(0).expand(2, b, b)  # symmetric: the same for both directions
    else:  # [0]: texts true of image i (row i); [1]: images text j is true of (column j)
        same = torch.stack([same | positives, same | positives.t()])
    has_neg = ~same.all(-1)  # [2, B]
    fallback = eye if b > 1 else torch.zeros_like(eye)
    excluded = torch.where(has_neg.unsqueeze(-1), same, fallback.unsqueeze(0))
    logits = torch.stack([sim_i2t, sim_t2i]).float()
    # Non-finite similarities would poison the softmax; neutralise them before sampling.
    logits = torch.nan_to_num(logits, nan=0.0, posinf=1e4, neginf=-1e4)
    logits = torch.where(has_neg.unsqueeze(-1), logits, torch.zeros_like(logits))
    logits = logits.masked_fill(excluded, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if hardness < 1.0:
        allowed = (~excluded).float()
        uniform = allowed / allowed.sum(-1, keepdim=True)
        probs = hardness * probs + (1.0 - hardness) * uniform
    probs = probs.reshape(2 * b, b)
    draws = torch.multinomial(probs, 1, generator=generator).reshape(2, b)
    if return_flags:
        return HardNegatives(draws[0], draws[1], ~has_neg[0], ~has_neg[1])
    return draws[0], draws[1]


def image_text_matching_loss(
    logits: Tensor,
    labels: Tensor | None = None,
    *,
    valid: Tensor | None = None,
) -> LossOutput:
    """2-way cross-entropy of matching logits.

    Args:
        logits: ``[N, 2]`` (class 1 = matched). With ``labels=None`` the layout must be
            ALBEF's ``[B positives; B (neg image, text); B (image, neg text)]``, ``N = 3B``
            (only "first B matched, last 2B not" matters to the loss; the order of the two negative
            blocks matters to ``valid``, which :meth:`HardNegatives.pair_valid` builds in this order).
        labels: ``long [N]`` in ``{0, 1}``, or ``None`` for the layout above.
        valid: ``bool [N]`` pairs to score (e.g. :meth:`HardNegatives.pair_valid`);
            no valid pair gives loss 0 (graph-connected, zero gradient).

    Returns:
        ``LossOutput``: fp32 mean CE over valid pairs; stats ``accuracy``, ``pos_acc``,
        ``neg_acc``.
    """
    check_floating("logits", logits, shape=(None, 2))
    n = logits.shape[0]
    if labels is None:
        if n % 3:
            raise ValueError(f"logits must have 3B rows ([pos; neg; neg]) when labels is None, got {n}")
        b = n // 3
        labels = torch.cat(
            [
                torch.ones(b, dtype=torch.long, device=logits.device),
                torch.zeros(2 * b, dtype=torch.long, device=logits.device),
            ]
        )
    else:
        check_tensor("labels", labels, shape=(n,), dtype=torch.long)
    if valid is not None:
        check_tensor("valid", valid, shape=(n,), dtype=torch.bool)
    check_same_device(logits=logits, labels=labels, valid=valid)
    ce = F.cross_entropy(logits.to(_acc_dtype(logits)), labels, reduction="none")
    w = torch.ones(n, dtype=torch.bool, device=logits.device) if valid is None else valid
    loss, count = _masked_mean(ce, w)
    with torch.no_grad():
        hit = logits.argmax(-1) == labels
        pos = w & (labels == 1)
        neg = w & (labels == 0)
        stats = {
            "accuracy": _stat((hit & w).sum() / count.clamp(min=1.0)),
            "pos_acc": _stat((hit & pos).sum() / pos.sum().clamp(min=1)),
            "neg_acc": _stat((hit & neg).sum() / neg.sum().clamp(min=1)),
        }
    return LossOutput(loss, stats)


def hard_negative_matching(
    image_states: Tensor,
    image_valid: Tensor | None,
    text_states: Tensor,
    text_valid: Tensor,
    sim_i2t: Tensor | None,
    sim_t2i: Tensor | None = None,
    *,
    fuse: PairEncoder,
    head: Callable[[Tensor], Tensor],
    image_ids: Tensor | None = None,
    generator: torch.Generator | None = None,
    hardness: float = 1.0,
    rows: tuple[int, int] | None = None,
    positives: Tensor | None = None,
) -> LossOutput:
    """ALBEF's image-text matching step with in-batch hard negatives.

    1. :func:`sample_hard_negatives` draws one negative text per image from ``sim_i2t`` and one
       negative image per text from ``sim_t2i`` (pairs sharing an id are never negatives).
    2. The ``3B`` pairs, in ALBEF's order ``[B (image i, text i); B (neg image, text i);
       B (image i, neg text)]`` (ALBEF fuses ``cat([image_neg, image])`` with ``cat([text, text_neg])``
       after the positives), go through ``fuse`` in ONE call, then ``head`` gives ``[3B, 2]`` logits
       (1 = matched).
    3. :func:`image_text_matching_loss` scores them; pairs built from a fallback draw (a row with
       no valid negative, see :func:`sample_hard_negatives`) are not scored.
       With ``positives``, a text true of an image is never drawn as its negative (nor that image as
       the text's).

    **Scoring a slice of the batch** (``rows=(start, stop)``, for data parallelism): the ``B``
    rows are *candidates* (e.g. the global batch gathered from every rank, with gradient) and
    the negatives are drawn for all ``B`` rows, so every caller with the same generator state
    draws the same negatives (and consumes the generator as one process on the ``B`` rows
    would); only the ``n = stop - start`` query rows ``[start, stop)`` are fused and scored
    (``3n`` pairs; their negatives index any of the ``B`` candidates). The loss is the mean over
    the scored pairs, as without ``rows``; two statistics are added so that the caller can turn
    it into its share of the mean over all rows (:func:`maskmm.distributed.rescale_to_global_mean`):
    ``num_scored`` (valid pairs of the query rows) and ``num_scored_total`` (valid pairs of all
    ``B`` rows, known on every caller since the draws are).

    Args:
        image_states: ``[B, Li, Dv]`` image tokens (any float dtype).
        image_valid: bool ``[B, Li]`` image key validity (``True`` = may be attended), or ``None``
            (every image token valid); gathered with the image rows and passed to ``fuse``.
        text_states: ``[B, Lt, Dt]`` text tokens.
        text_valid: bool ``[B, Lt]`` text key validity.
        sim_i2t: ``[B, B]`` image-to-text similarities (e.g. ITC logits; no gradient flows), or
            ``None``: negatives drawn uniformly among the valid ones.
        sim_t2i: ``[B, B]`` text-to-image similarities; ``None`` = ``sim_i2t.T``.
        fuse: :data:`PairEncoder` ``(image, image_valid, text, text_valid) -> [3B, D]``, rows in the
            order of step 2.
        head: ``[3B, D] -> [3B, 2]`` matching logits (same row order).
        image_ids: long ``[B]`` pair ids, or ``None`` (every pair distinct).
        generator: RNG of the draws (same seed, same device -> same negatives).
        hardness: mix of similarity-based and uniform draws (see :func:`sample_hard_negatives`).
        rows: ``(start, stop)`` with ``0 <= start <= stop <= B``: score only these query rows
            (see above); ``None`` = all rows.
        positives: ``bool [B, B]`` over the ``B`` candidates, ``[i, j]`` = text ``j`` is true of
            image ``i`` (:func:`maskmm.losses.batch_positives`), or ``None``.

    Returns:
        :class:`LossOutput`: fp32 (fp64 for fp64 logits) mean cross-entropy over the scored pairs;
        stats ``accuracy``, ``pos_acc``, ``neg_acc`` (and ``num_scored``, ``num_scored_total``
        with ``rows``). Edge cases: ``B = 1`` scores the positive only (no negative exists);
        no row to score (``B = 0`` or an empty ``rows``) gives loss 0 (graph-connected, zero
        gradient) without calling ``fuse``.
    """
    check_floating("image_states", image_states, ndim=3)
    b = image_states.shape[0]
    check_floating("text_states", text_states, shape=(b, None, None))
    check_tensor("text_valid", text_valid, shape=tuple(text_states.shape[:2]), dtype=torch.bool)
    if image_valid is not None:
        check_tensor("image_valid", image_valid, shape=tuple(image_states.shape[:2]), dtype=torch.bool)
    if sim_i2t is None and sim_t2i is not None:
        raise ValueError("sim_t2i was given without sim_i2t; pass both, sim_i2t only, or neither")
    for name, fn in (("fuse", fuse), ("head", head)):
        if not callable(fn):
            raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    if rows is not None:
        ok = isinstance(rows, tuple) and len(rows) == 2
        ok = ok and all(isinstance(r, int) and not isinstance(r, bool) for r in rows)
        if not ok or not 0 <= rows[0] <= rows[1] <= b:
            raise ValueError(
                f"rows must be a tuple (start, stop) of ints with 0 <= start <= stop <= B={b}, got {rows!r}"
            )
    device = check_same_device(
        image_states=image_states,
        image_valid=image_valid,
        text_states=text_states,
        text_valid=text_valid,
        sim_i2t=sim_i2t,
        sim_t2i=sim_t2i,
        image_ids=image_ids,
    )
    if sim_i2t is None:
        sim_i2t = torch.zeros(b, b, device=device)
    if sim_t2i is None:
        sim_t2i = sim_i2t.t()
    negs = sample_hard_negatives(
        sim_i2t,
        sim_t2i,
        image_ids,
        generator=generator,
        return_flags=True,
        hardness=hardness,
        positives=positives,
    )
    start, stop = (0, b) if rows is None else rows
    n = stop - start
    extra: dict[str, Tensor] = {}
    if rows is not None:
        with torch.no_grad():
            neg_valid = torch.stack([~negs.image_fallback, ~negs.text_fallback])  # [2, B]
            extra = {
                "num_scored": _stat(n + neg_valid[:, start:stop].sum()),
                "num_scored_total": _stat(b + neg_valid.sum()),
            }
    if n == 0:
        out = image_text_matching_loss(image_states.new_zeros(0, 2))
        anchor = (image_states.sum() + text_states.sum()).to(out.loss.dtype) * 0.0
        return LossOutput(out.loss + anchor, {**out.stats, **extra})

    own = torch.arange(start, stop, device=device)
    negs = HardNegatives(*(t[start:stop] for t in negs))
    neg_image, neg_text, valid = negs.image_idx, negs.text_idx, negs.pair_valid()
    # ALBEF's order: [positives; (neg image, text); (image, neg text)], the order of pair_valid().
    image_rows = torch.cat([own, neg_image, own])
    text_rows = torch.cat([own, own, neg_text])
    pairs = fuse(
        image_states[image_rows],
        None if image_valid is None else image_valid[image_rows],
        text_states[text_rows],
        text_valid[text_rows],
    )
    logits = head(pairs)
    check_floating("head(fuse(...)) logits", logits, shape=(3 * n, 2))
    out = image_text_matching_loss(logits, valid=valid)
    return LossOutput(out.loss, {**out.stats, **extra}) if extra else out


class ImageTextMatchingLoss(nn.Module):
    """Module form of :func:`image_text_matching_loss`."""

    def forward(
        self, logits: Tensor, labels: Tensor | None = None, *, valid: Tensor | None = None
    ) -> LossOutput:
        return image_text_matching_loss(logits, labels, valid=valid)
