"""Batch collation: stacks images and tokenizes captions (tokenisation lives here, not in models)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import torch

from .facts import caption_text_facts, encode_facts
from .skips import SKIP_KEY_PREFIX, sum_item_skips
from .tokenizers import TokenizedText

__all__ = ["ImageTextCollator", "Tokenizer"]


class Tokenizer(Protocol):
    """What the collator needs from a tokenizer (:class:`WordTokenizer`, :class:`HFTokenizer`)."""

    pad_id: int
    mask_id: int

    def __call__(self, texts: Sequence[str], max_len: int, padding: str = ...) -> TokenizedText: ...


class ImageTextCollator:
    """``collate_fn`` turning dataset items into a training batch.

    Args:
        tokenizer: called as ``tokenizer(captions, max_len, padding)``.
        max_len: maximum text length in tokens, ``[CLS]`` and ``[SEP]`` included.
        padding: ``"longest"`` (pad to the batch's longest caption) or ``"max_length"`` (always
            ``max_len``, static shapes).
        facts: add ``image_facts`` and ``caption_facts`` (see below and :mod:`maskmm.data.facts`).

    Returns a dict:

    - ``images``: ``float [B, 3, H, W]`` (items' images stacked; all must share one shape and dtype)
    - ``input_ids``: ``int64 [B, L]``; ``text_valid``: ``bool [B, L]`` (``True`` = real token);
      ``word_ids``: ``int64 [B, L]`` (``-1`` at special and padding tokens)
    - ``image_ids``: ``int64 [B]`` (equal ids = same image, e.g. to exclude positives);
      ``index``: ``int64 [B]``
    - with ``facts``: ``image_facts int64 [B, Fi]`` and ``caption_facts int64 [B, Fc]``, fact ids padded
      with ``-1`` (:func:`~maskmm.data.facts.encode_facts`): an item's own ``"image_facts"`` /
      ``"caption_facts"`` (the built-in data gives its scene's and its caption's), else the normalised
      caption text for both (:func:`~maskmm.data.facts.caption_text_facts`). Caption ``j`` is true of
      image ``i`` when its facts are a subset of image ``i``'s (:func:`maskmm.losses.pair_positives`).
    - with boxes (built-in data): ``boxes float32 [B, M, 4]``, ``box_valid bool [B, M]`` and
      ``phrase_spans int64 [B, M, 2]`` (word spans; with one token per word the tokens are
      ``start + 1 .. end``), ``M`` the most objects in the batch, padding rows zero / ``False``.
    - ``skipped/<reason>``: ``int64`` 0-dim, for every reason of
      :data:`~maskmm.data.skips.SKIP_REASONS`: the sum of the items' ``"skipped"`` counts (records
      the readers skipped while producing these items; zero for items without such counts).
      :func:`~maskmm.data.skips.pop_skip_counts` turns them into ``{reason: int}`` and removes them.

    Items' ``"caption"`` must be a ``str``; use the retrieval set builder for lists of captions.
    Captions that are not valid Unicode are repaired by the tokenizers (lone surrogates become
    U+FFFD) instead of failing the batch.
    """

    def __init__(
        self, tokenizer: Tokenizer, max_len: int, padding: str = "longest", *, facts: bool = True
    ) -> None:
        if not callable(tokenizer):
            raise TypeError(f"tokenizer must be callable, got {type(tokenizer).__name__}")
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 2:
            raise ValueError(f"max_len must be an int >= 2, got {max_len!r}")
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        if not isinstance(facts, bool):
            raise TypeError(f"facts must be a bool, got {type(facts).__name__}")
        self.tokenizer, self.max_len, self.padding, self.facts = tokenizer, max_len, padding, facts

    def __call__(self, items: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        if not isinstance(items, Sequence) or not items:
            raise ValueError("items must be a non-empty sequence of dataset items")
        for i, it in enumerate(items):
            if not isinstance(it, Mapping) or not all(
                k in it for k in ("image", "caption", "image_id", "index")
            ):
                raise TypeError(f"items[{i}] must be a mapping with image, caption, image_id and index")
            if not isinstance(it["caption"], str):
                raise TypeError(f"items[{i}]['caption'] must be a str, got {type(it['caption']).__name__}")
            img = it["image"]
            if not isinstance(img, torch.Tensor) or img.dim() != 3 or not img.is_floating_point():
                got = list(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
                raise TypeError(f"items[{i}]['image'] must be a float tensor [3, H, W], got {got}")
            if ("image_facts" in it) != ("caption_facts" in it):
                raise ValueError(f"items[{i}] has one of 'image_facts' and 'caption_facts' but not the other")
            ref = items[0]["image"]
            if img.shape != ref.shape or img.dtype != ref.dtype:
                raise ValueError(
                    f"items[{i}]['image'] has shape {list(img.shape)} {img.dtype} but items[0]['image'] has "
                    f"{list(ref.shape)} {ref.dtype}; resize images to one size before collating"
                )
        skipped = sum_item_skips(items)
        tok = self.tokenizer([it["caption"] for it in items], self.max_len, self.padding)
        batch = {
            "images": torch.stack([it["image"] for it in items]),
            "input_ids": tok.input_ids,
            "text_valid": tok.valid,
            "word_ids": tok.word_ids,
            "image_ids": torch.tensor([int(it["image_id"]) for it in items], dtype=torch.long),
            "index": torch.tensor([int(it["index"]) for it in items], dtype=torch.long),
        }
        if self.facts:
            default = [caption_text_facts(it["caption"]) for it in items]
            for key in ("image_facts", "caption_facts"):
                batch[key] = encode_facts([it.get(key, d) for it, d in zip(items, default)])
        if all("boxes" in it for it in items):
            m = max(int(it["boxes"].shape[0]) for it in items)
            b = len(items)
            boxes = torch.zeros(b, m, 4, dtype=torch.float32)
            valid = torch.zeros(b, m, dtype=torch.bool)
            spans = torch.zeros(b, m, 2, dtype=torch.long)
            for i, it in enumerate(items):
                n = int(it["boxes"].shape[0])
                boxes[i, :n] = it["boxes"]
                valid[i, :n] = True
                if "phrase_spans" in it:
                    spans[i, :n] = it["phrase_spans"]
            batch.update(boxes=boxes, box_valid=valid, phrase_spans=spans)
        for reason, n in skipped.items():
            batch[SKIP_KEY_PREFIX + reason] = torch.tensor(n, dtype=torch.long)
        return batch
