"""Wrapper giving a Hugging Face tokenizer (loaded from a local path) maskmm's tokenizer interface."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from .tokenizers import TokenizedText, check_texts

__all__ = ["TOKENIZER_FILES", "HFTokenizer"]

#: Files of which a tokenizer folder needs at least one: the ``tokenizers`` serialisation written by
#: ``save_pretrained`` of a fast tokenizer, or a vocabulary a slow tokenizer class can be built from
#: (``vocab.json`` goes with ``merges.txt``; ``*.model`` files need ``sentencepiece``).
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
_PROBE = "a"


class HFTokenizer:
    """A Hugging Face *fast* tokenizer read from a local directory; nothing is downloaded.

    Args:
        path: directory written by ``tokenizer.save_pretrained`` (or a model directory); it must
            hold one of :data:`TOKENIZER_FILES` (normally ``tokenizer.json``).

    Needs ``transformers``. The tokenizer must define pad and mask tokens (BERT-like); CLS/SEP
    fall back to BOS/EOS when absent. It must wrap every text as ``[CLS] ... [SEP]`` itself (a
    post-processor such as ``tokenizers.processors.TemplateProcessing(single="[CLS] $A [SEP]",
    ...)``): the model reads the text embedding at the first position, so a tokenizer that does
    not add CLS/SEP is refused rather than silently training on the first word. ``word_ids`` come
    from the tokenizer's own word segmentation, so sub-word pieces of one word share an id
    (whole-word masking). Texts that are not valid Unicode (lone surrogates) are repaired with
    :func:`~maskmm.data.tokenizers.clean_text` instead of failing.

    Raises:
        ValueError: the folder does not exist, is not a directory, holds none of
            :data:`TOKENIZER_FILES`, cannot be loaded, lacks pad/mask/CLS/SEP tokens or does not
            add CLS/SEP around a text; the message names the folder.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        folder = os.fspath(path)
        if not os.path.exists(folder):
            raise ValueError(f"tokenizer folder {folder!r} does not exist (a local tokenizer directory)")
        if not os.path.isdir(folder):
            raise ValueError(f"tokenizer folder {folder!r} is a file, not a local tokenizer directory")
        present = sorted(os.listdir(folder))
        if not any(name in present for name in TOKENIZER_FILES):
            shown = ", ".join(present[:10]) + (", ..." if len(present) > 10 else "") if present else "nothing"
            raise ValueError(
                f"tokenizer folder {folder!r} holds no tokenizer: expected tokenizer.json (written by "
                f"save_pretrained of a fast tokenizer) or a vocabulary file "
                f"({', '.join(TOKENIZER_FILES[1:])}), found {shown}"
            )
        try:
            from transformers import AutoTokenizer
        except ImportError as e:
            raise ImportError("HFTokenizer needs the 'transformers' package: pip install transformers") from e
        try:
            tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"tokenizer folder {folder!r} could not be loaded: {e}") from e
        self._init(tok, f"tokenizer folder {folder!r}")

    @classmethod
    def from_tokenizer(cls, tokenizer: object) -> HFTokenizer:
        """Wrap an already constructed fast tokenizer (checked like a loaded one)."""
        self = cls.__new__(cls)
        self._init(tokenizer, f"tokenizer {type(tokenizer).__name__}")
        return self

    def _init(self, tok: object, source: str) -> None:
        if not getattr(tok, "is_fast", False):
            raise TypeError(
                f"tokenizer must be a Hugging Face fast tokenizer (for word_ids), got {type(tok).__name__}"
            )
        tok.padding_side = "right"
        tok.truncation_side = "right"
        self.tokenizer = tok
        pad, mask = tok.pad_token_id, tok.mask_token_id
        if pad is None or mask is None:
            raise ValueError(f"{source} must define pad and mask tokens, got pad={pad}, mask={mask}")
        cls_id = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        sep_id = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        if cls_id is None or sep_id is None:
            raise ValueError(
                f"{source} must define CLS and SEP tokens (or BOS and EOS), got cls={cls_id}, sep={sep_id}"
            )
        probe = list(tok(_PROBE)["input_ids"])
        if len(probe) < 2 or probe[0] != cls_id or probe[-1] != sep_id:
            raise ValueError(
                f"{source} does not wrap texts as [CLS] ... [SEP]: {_PROBE!r} is encoded as {probe}, "
                f"expected {cls_id} (CLS) first and {sep_id} (SEP) last. The text embedding is read at "
                f"the first position; give the tokenizer a post-processor that adds them, e.g. "
                f"tokenizers.processors.TemplateProcessing(single='[CLS] $A [SEP]', ...)"
            )
        self.pad_id, self.mask_id, self.cls_id, self.sep_id = int(pad), int(mask), int(cls_id), int(sep_id)
        self.unk_id = tok.unk_token_id
        self.special_ids: list[int] = sorted(set(tok.all_special_ids))

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __call__(self, texts: str | Sequence[str], max_len: int, padding: str = "longest") -> TokenizedText:
        """Tokenize a batch, truncated to ``max_len`` (see :class:`~maskmm.data.tokenizers.TokenizedText`)."""
        texts = check_texts(texts, max_len, padding)
        enc = self.tokenizer(texts, padding=padding, truncation=True, max_length=max_len, return_tensors="pt")
        ids = enc["input_ids"].long()
        valid = enc["attention_mask"].bool()
        word_ids = torch.tensor(
            [[-1 if w is None else w for w in enc.word_ids(i)] for i in range(len(texts))], dtype=torch.long
        ).reshape(ids.shape)
        return TokenizedText(ids, valid, word_ids)

    encode = __call__

    def decode(self, ids: torch.Tensor | Sequence[int], skip_special: bool = True) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special)

    def batch_decode(self, ids: torch.Tensor, skip_special: bool = True) -> list[str]:
        return [self.decode(row, skip_special) for row in ids]
