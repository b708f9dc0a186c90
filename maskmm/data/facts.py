"""What a caption asserts and what an image shows, as hashed facts: the data side of false negatives.

In-batch contrastive and matching losses treat every other caption of a batch as a negative of an
image. When a caption is also true of another image of the batch (a duplicate caption, or a caption
of the built-in data whose facts another scene happens to satisfy), that "negative" is label noise,
and hard-negative mining draws exactly those pairs most often. The collator describes each item by
two sets of facts so that the losses can tell (:func:`maskmm.losses.pair_positives`):

- **caption facts**: what the caption asserts; **image facts**: what is true of the image.
- Caption ``j`` is true of image ``i`` when every fact of caption ``j`` is a fact of image ``i``.

Any hashable value can be a fact. Items of the built-in data carry their scene's facts and their
caption's facts (:mod:`maskmm.data.grammar`), so the relation is exact. For any other data the default
is the caption itself: both sets hold the normalised caption text (:func:`normalize_caption`), so a
caption is true of an image when it equals the image's own caption up to case, spacing and final
punctuation (duplicate captions, common in web and COCO-style data). Pairs of the same image are
handled by ``image_ids``.

Facts are hashed to non-negative 63-bit ints (BLAKE2b of their ``repr``, the same in every process and
run) and padded with ``-1`` into ``long [B, F]`` tensors, so they move to the device and can be
gathered across data-parallel ranks like any other batch tensor.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Hashable, Iterable, Sequence

import torch

__all__ = ["NO_FACT", "caption_text_facts", "encode_facts", "fact_id", "normalize_caption"]

#: Padding value of an encoded fact tensor (never a fact id: ids are non-negative).
NO_FACT = -1

_SPACES = re.compile(r"\s+")
_MASK63 = (1 << 63) - 1


def normalize_caption(text: str) -> str:
    """Lower case, single spaces, no leading/trailing spaces or final ``.,;:!?`` characters."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _SPACES.sub(" ", text.lower()).strip().rstrip(".,;:!? ").strip()


def fact_id(fact: Hashable) -> int:
    """The id of ``fact``: a non-negative 63-bit int, stable across processes and runs.

    Facts are told apart by their ``repr`` (tuples of strings and ints, as the built-in data uses,
    have a fixed one); two facts with different ``repr`` collide with probability about ``2**-63``.
    """
    digest = hashlib.blake2b(repr(fact).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK63


def caption_text_facts(caption: str) -> frozenset[tuple[str, str]]:
    """The default facts of a caption and of the image it describes: ``{("caption", normalised text)}``."""
    return frozenset({("caption", normalize_caption(caption))})


def encode_facts(fact_sets: Sequence[Iterable[Hashable]]) -> torch.Tensor:
    """``long [B, F]``: row ``b`` holds the sorted distinct ids of ``fact_sets[b]``, padded with
    :data:`NO_FACT` to the largest set (``F >= 1``)."""
    rows = [sorted({fact_id(f) for f in facts}) for facts in fact_sets]
    width = max([len(r) for r in rows] + [1])
    out = torch.full((len(rows), width), NO_FACT, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out
