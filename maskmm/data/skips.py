"""Counts of skipped records, carried from the readers to the training loop.

The real-data readers never raise on a broken record: they skip it and count it under a reason
(one of :data:`SKIP_REASONS`). The counts reach the consumer of the batches, also from
``DataLoader`` worker processes, in three steps:

1. Every item a reader returns has ``item["skipped"]``: a dict with one ``int`` per reason of
   :data:`SKIP_REASONS`, the records skipped while producing this item (for
   :class:`~maskmm.data.JsonCaptionDataset`: during this ``__getitem__`` call; for
   :class:`~maskmm.data.TarShardDataset`: since the previous item of the same reader).
2. :class:`~maskmm.data.ImageTextCollator` sums them over the batch into fixed keys
   ``batch["skipped/<reason>"]``, one ``int64`` 0-dim tensor per reason of :data:`SKIP_REASONS`
   (zeros included, so every batch has the same keys). 0-dim tensors survive
   ``{k: v.to(device)}`` loops and are shared, not split, by micro-batch splitting.
3. :func:`pop_skip_counts` (or :func:`skip_counts`) turns a batch's entries back into
   ``{reason: int}``; call it on the batch as the loader returns it (CPU tensors: no device sync).

Skips found while a dataset is built (for example JSON records with a missing image file) are not
in any batch: they are in the dataset's ``skipped`` counter in the process that built it.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence

import numpy as np
import torch

__all__ = [
    "SKIP_KEY_PREFIX",
    "SKIP_REASONS",
    "empty_skips",
    "pop_skip_counts",
    "skip_counts",
    "sum_item_skips",
]

#: Reasons a record is skipped, in the order of the batch entries.
#:
#: - ``bad_record``: not a dict, or ``image`` / ``caption`` missing or of the wrong type (JSON)
#: - ``empty_caption``: no caption, or only blank ones
#: - ``bad_text``: a caption that is not valid Unicode text (invalid UTF-8 bytes, or a lone
#:   surrogate such as the JSON escape ``"\ud800"``); such captions are dropped, not repaired
#: - ``missing_file``: the image file does not exist (JSON)
#: - ``missing_image``: a tar sample without an image member
#: - ``bad_image``: an image that cannot be decoded
#: - ``bad_shard``: an unreadable or truncated tar shard
#: - ``other``: any reason a custom dataset reports that is not one of the above
SKIP_REASONS: tuple[str, ...] = (
    "bad_record",
    "empty_caption",
    "bad_text",
    "missing_file",
    "missing_image",
    "bad_image",
    "bad_shard",
    "other",
)

#: Prefix of the batch keys holding the counts: ``batch[SKIP_KEY_PREFIX + reason]``.
SKIP_KEY_PREFIX = "skipped/"


def empty_skips() -> dict[str, int]:
    """A zero count for every reason of :data:`SKIP_REASONS` (the ``item["skipped"]`` layout)."""
    return dict.fromkeys(SKIP_REASONS, 0)


def _as_count(value: object, where: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value.item())
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{where} must be an int count, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{where} must be a non-negative count, got {value}")
    return int(value)


def sum_item_skips(items: Sequence[object]) -> dict[str, int]:
    """Sum the ``"skipped"`` dicts of dataset items (items without one count as zero).

    Reasons outside :data:`SKIP_REASONS` are added to ``"other"``. Raises ``TypeError`` /
    ``ValueError`` naming ``items[i]['skipped']`` when an entry is not a mapping of counts.
    """
    total = empty_skips()
    for i, it in enumerate(items):
        if not isinstance(it, Mapping) or "skipped" not in it:
            continue
        counts = it["skipped"]
        if not isinstance(counts, Mapping):
            raise TypeError(
                f"items[{i}]['skipped'] must be a mapping {{reason: count}}, got {type(counts).__name__}"
            )
        for reason, n in counts.items():
            n = _as_count(n, f"items[{i}]['skipped'][{reason!r}]")
            total[reason if reason in total else "other"] += n
    return total


def skip_counts(batch: Mapping[str, object]) -> dict[str, int]:
    """``{reason: int}`` for every reason of :data:`SKIP_REASONS`, read from a collated batch.

    Reasons whose key ``"skipped/<reason>"`` is absent count as zero (e.g. a batch made by another
    collate function). Reading tensors that live on an accelerator synchronises with it: call this
    on the batch as the loader returns it, before moving it to the device.
    """
    if not isinstance(batch, Mapping):
        raise TypeError(f"batch must be a mapping, got {type(batch).__name__}")
    out = empty_skips()
    for reason in SKIP_REASONS:
        key = SKIP_KEY_PREFIX + reason
        if key in batch:
            out[reason] = _as_count(batch[key], f"batch[{key!r}]")
    return out


def pop_skip_counts(batch: MutableMapping[str, object]) -> dict[str, int]:
    """Like :func:`skip_counts`, and remove the ``"skipped/<reason>"`` entries from ``batch``.

    What remains in ``batch`` is exactly what the model inputs were before skip counts existed.
    """
    out = skip_counts(batch)
    for reason in SKIP_REASONS:
        batch.pop(SKIP_KEY_PREFIX + reason, None)
    return out
