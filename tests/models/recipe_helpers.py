"""Batches and settings shared by the recipe tests (MaskVLM, SemMIM)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

VOCAB = 1024  # tiny preset vocabulary
SMALL = {"depth": 1, "dim": 64, "image_size": 32, "intermediate_size": 128, "mlp_ratio": 2.0}
SPECIALS = (0, 1, 2, 3, 4)  # [PAD], [CLS], [SEP], [MASK], [UNK]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Tiny matmuls run fastest single-threaded on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def pair_batch(
    b: int = 5, length: int = 11, size: int = 32, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images [B, 3, size, size], input_ids long [B, L], text_valid bool [B, L])``: captions
    ``[CLS] words [SEP] [PAD]...`` of random lengths in ``[4, L]`` (the first one full)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, size, size, generator=g)
    ids = torch.randint(len(SPECIALS), VOCAB, (b, length), generator=g)
    ids[:, 0] = 1
    lengths = torch.randint(4, length + 1, (b,), generator=g)
    lengths[0] = length
    valid = torch.arange(length)[None] < lengths[:, None]
    ids[torch.arange(b), lengths - 1] = 2
    ids[~valid] = 0
    return images, ids, valid


def gen(seed: int = 0) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)
