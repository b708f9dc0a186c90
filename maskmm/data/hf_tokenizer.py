"""Wrapper giving a Hugging Face tokenizer (loaded from a local path) maskmm's tokenizer interface."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from .tokenizers import TokenizedText, check_texts

__all__ = ["HFTokenizer"]


class HFTokenizer:
    """A Hugging Face *fast* tokenizer read from a local directory; nothing is downloaded.

    Args:
        path: directory written by ``tokenizer.save_pretrained`` (or a model directory).

    Needs ``transformers``. The tokenizer must define pad and mask tokens (BERT-like); CLS/SEP
    fall back to BOS/EOS when absent. ``word_ids`` come from the tokenizer's own word
    segmentation, so sub-word pieces of one word share an id (whole-word masking).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        if not os.path.isdir(path):
            raise FileNotFoundError(f"path must be a local tokenizer directory, got {os.fspath(path)!r}")
        try:
            from transformers import AutoTokenizer
        except ImportError as e:
            raise ImportError("HFTokenizer needs the 'transformers' package: pip install transformers") from e
        tok = AutoTokenizer.from_pretrained(os.fspath(path), local_files_only=True)
        self._init(tok)

    @classmethod
    def from_tokenizer(cls, tokenizer: object) -> HFTokenizer:
        """Wrap an already constructed fast tokenizer."""
        self = cls.__new__(cls)
        self._init(tokenizer)
        return self

    def _init(self, tok: object) -> None:
        if not getattr(tok, "is_fast", False):
            raise TypeError(
                f"tokenizer must be a Hugging Face fast tokenizer (for word_ids), got {type(tok).__name__}"
            )
        tok.padding_side = "right"
        tok.truncation_side = "right"
        self.tokenizer = tok
        pad, mask = tok.pad_token_id, tok.mask_token_id
        if pad is None or mask is None:
            raise ValueError(f"tokenizer must define pad and mask tokens, got pad={pad}, mask={mask}")
        cls_id = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        sep_id = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        self.pad_id, self.mask_id, self.cls_id, self.sep_id = int(pad), int(mask), cls_id, sep_id
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
