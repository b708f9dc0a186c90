"""Tokenizers: a built-in word-level tokenizer, and the common output type.

Every tokenizer is called on a batch of strings and returns a
:class:`TokenizedText` of right-padded tensors ``[B, L]``:

- ``input_ids`` ``int64``: ``[CLS] w_1 ... w_k [SEP] [PAD] ...``
- ``valid`` ``bool``: ``True`` at real tokens (CLS and SEP included), ``False`` at padding;
  this is the text attention mask (``True`` = may be attended)
- ``word_ids`` ``int64``: index of the word each token belongs to (``-1`` at CLS, SEP and
  padding), for whole-word masking

and exposes ``pad_id``, ``cls_id``, ``sep_id``, ``mask_id``, ``unk_id``, ``special_ids``,
``vocab_size`` and ``decode``. Tokenisation belongs in the collate function, not in a model.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch

from .grammar import grammar_words
from .vocab import ShapesConfig

__all__ = ["SPECIAL_TOKENS", "TokenizedText", "WordTokenizer", "check_texts", "clean_text", "is_valid_text"]

#: Special tokens of :class:`WordTokenizer`, with ids 0..4 in this order.
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")
_WORD_RE = re.compile(r"\w+|[^\w\s]")


class TokenizedText(NamedTuple):
    """A tokenized batch: ``input_ids int64 [B, L]``, ``valid bool [B, L]``, ``word_ids int64 [B, L]``."""

    input_ids: torch.Tensor
    valid: torch.Tensor
    word_ids: torch.Tensor


def is_valid_text(text: str) -> bool:
    """Whether ``text`` is valid Unicode text, i.e. encodable as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clean_text(text: str) -> str:
    """``text`` made encodable as UTF-8: surrogate pairs are joined, lone surrogates become U+FFFD.

    A Python ``str`` can hold surrogate code points (``json.loads('"\\ud800"')`` gives one) that
    no UTF-8 consumer accepts; Hugging Face tokenizers raise on them. Valid text is returned as is.
    """
    if is_valid_text(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def check_texts(texts: object, max_len: object, padding: object) -> list[str]:
    """Validate a batch of texts and the length arguments; return the texts as a list.

    Texts that are not valid Unicode are repaired with :func:`clean_text` rather than rejected, so
    one bad caption cannot stop a training step (the readers already skip such captions).
    """
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"texts must be a str or a sequence of str, got {type(texts).__name__}")
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 2:
        raise ValueError(f"max_len must be an int >= 2 (room for [CLS] and [SEP]), got {max_len!r}")
    if padding not in ("longest", "max_length"):
        raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
    return [clean_text(t) for t in texts]


class WordTokenizer:
    """Whitespace/punctuation word tokenizer with a fixed vocabulary: one token per word.

    Args:
        words: vocabulary words (specials are added in front, duplicates dropped), or a
            :class:`~maskmm.data.vocab.ShapesConfig` for every word of the shapes grammar with its
            vocabulary; default: the built-in shapes grammar.
        lowercase: lower-case text before lookup.

    Ids: ``[PAD]=0, [CLS]=1, [SEP]=2, [MASK]=3, [UNK]=4``, then the words in order. Words
    outside the vocabulary map to ``[UNK]``.
    """

    def __init__(self, words: Iterable[str] | ShapesConfig | None = None, *, lowercase: bool = True) -> None:
        if words is None:
            words = grammar_words()
        elif isinstance(words, ShapesConfig):
            words = grammar_words(words)
        if isinstance(words, str):
            raise TypeError("words must be an iterable of str, not a single str")
        words = list(words)
        if not all(isinstance(w, str) and w and not any(c.isspace() for c in w) for w in words):
            raise ValueError("words must be non-empty strings without whitespace")
        self.lowercase = lowercase
        tokens = list(dict.fromkeys([*SPECIAL_TOKENS, *(w.lower() if lowercase else w for w in words)]))
        self.itos: list[str] = tokens
        self.vocab: dict[str, int] = {t: i for i, t in enumerate(tokens)}
        self.pad_id, self.cls_id, self.sep_id, self.mask_id, self.unk_id = range(5)
        self.special_ids: list[int] = [0, 1, 2, 3, 4]

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def __len__(self) -> int:
        return len(self.itos)

    def split(self, text: str) -> list[str]:
        """Words of ``text`` (runs of word characters; each punctuation mark is its own word)."""
        return _WORD_RE.findall(text.lower() if self.lowercase else text)

    def __call__(self, texts: str | Sequence[str], max_len: int, padding: str = "longest") -> TokenizedText:
        """Tokenize a batch; words beyond ``max_len - 2`` are cut (``[SEP]`` is always kept).

        ``padding="longest"`` pads to the longest text in the batch (at most ``max_len``),
        ``"max_length"`` always to ``max_len``.
        """
        texts = check_texts(texts, max_len, padding)
        rows = [[self.vocab.get(w, self.unk_id) for w in self.split(t)][: max_len - 2] for t in texts]
        length = max_len if padding == "max_length" else max((len(r) + 2 for r in rows), default=2)
        b = len(rows)
        ids = torch.full((b, length), self.pad_id, dtype=torch.long)
        word_ids = torch.full((b, length), -1, dtype=torch.long)
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        flat = torch.tensor([t for r in rows for t in r], dtype=torch.long)
        pos = torch.arange(length)
        body = (pos[None, :] >= 1) & (pos[None, :] <= lengths[:, None])
        ids[body] = flat
        word_ids[body] = (pos[None, :] - 1).expand(b, length)[body]
        ids[:, 0] = self.cls_id
        ids[torch.arange(b), lengths + 1] = self.sep_id
        valid = pos[None, :] <= lengths[:, None] + 1
        return TokenizedText(ids, valid, word_ids)

    encode = __call__

    def decode(self, ids: torch.Tensor | Sequence[int], skip_special: bool = True) -> str:
        """Words of one row of ids joined by spaces.

        ``skip_special`` drops ``[PAD]``, ``[CLS]`` and ``[SEP]``; ``[MASK]`` and ``[UNK]`` stay visible.
        """
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"ids must be one row [L], got shape {list(ids.shape)}")
            ids = ids.tolist()
        out = []
        for i in ids:
            if not 0 <= int(i) < len(self.itos):
                raise ValueError(f"ids holds {i}, outside the vocabulary [0, {len(self.itos)})")
            if skip_special and int(i) in (self.pad_id, self.cls_id, self.sep_id):
                continue
            out.append(self.itos[int(i)])
        return " ".join(out)

    def batch_decode(self, ids: torch.Tensor, skip_special: bool = True) -> list[str]:
        """:meth:`decode` each row of ``ids [B, L]``."""
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            raise ValueError(f"ids must be a tensor [B, L], got {getattr(ids, 'shape', type(ids).__name__)}")
        return [self.decode(row, skip_special) for row in ids]

    @classmethod
    def from_texts(cls, texts: Iterable[str], *, min_count: int = 1, lowercase: bool = True) -> WordTokenizer:
        """Vocabulary of words seen at least ``min_count`` times, most frequent first (ties: first seen)."""
        probe = cls([], lowercase=lowercase)
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(probe.split(t))
        return cls([w for w, c in counts.most_common() if c >= min_count], lowercase=lowercase)

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"lowercase": self.lowercase, "tokens": self.itos}, f)

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordTokenizer:
        """Read a vocabulary written by :meth:`save`."""
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        tokens = data["tokens"]
        if tuple(tokens[:5]) != SPECIAL_TOKENS:
            raise ValueError(f"{path} does not start with the special tokens {SPECIAL_TOKENS}")
        return cls(tokens[5:], lowercase=data["lowercase"])
