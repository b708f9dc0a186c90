"""BERT-style text token masking, with optional whole-word grouping.

Counting rule (our choice): a sample with ``n`` maskable units (tokens, or words with whole-word
masking) gets ``k = floor(ratio * n + 0.5)`` masked units (round half up), and at least one when
``ratio > 0`` and ``n >= 1``, so short captions always contribute to MLM. A unit is chosen uniformly
among the maskable ones; a sample with no maskable unit stays unmasked.

Maskable tokens are valid (not padding) and not in ``special_ids``. Each chosen token is replaced,
independently, by ``mask_token_id`` with probability ``mask_prob``, by a random token with
probability ``random_prob``, and kept otherwise (80/10/10 by default). Random tokens are uniform over
``[0, vocab_size)`` minus ``special_ids`` and ``mask_token_id``.

Whole-word masking: ``word_ids long [B, L]`` gives each token's word index (any non-negative ids,
compared within a row; ``-1`` = not a word, e.g. special tokens). The count is in words; all
maskable tokens of a chosen word are masked together. A word is maskable if it has at least one
maskable token. The 80/10/10 corruption is still drawn per token.

Everything is vectorised (random scores + sort + per-row rank < count); no host synchronisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from maskmm._checks import check_generator, check_int, check_ratio, check_same_device, check_tensor
from maskmm.masking._common import counts_to_mask, select_per_row
from maskmm.masking.types import TokenMasking

__all__ = ["TokenMasker", "mask_tokens"]

IGNORE_INDEX = -100


def _check_config(
    mask_token_id: object, vocab_size: object, special_ids: object, mask_prob: object, random_prob: object
) -> tuple[int, int, tuple[int, ...], float, float]:
    vocab = check_int("vocab_size", vocab_size, minimum=1)
    if isinstance(mask_token_id, bool) or not isinstance(mask_token_id, int):
        raise TypeError(f"mask_token_id must be an int, got {type(mask_token_id).__name__}")
    if not 0 <= mask_token_id < vocab:
        raise ValueError(f"mask_token_id must lie in [0, vocab_size={vocab}), got {mask_token_id}")
    if isinstance(special_ids, (str, bytes)) or not isinstance(special_ids, Sequence | set | frozenset):
        raise TypeError(f"special_ids must be a sequence of ints, got {type(special_ids).__name__}")
    specials = []
    for s in special_ids:
        if isinstance(s, bool) or not isinstance(s, int):
            raise TypeError(f"special_ids must contain ints, got {type(s).__name__}")
        if not 0 <= s < vocab:
            raise ValueError(f"special_ids must lie in [0, vocab_size={vocab}), got {s}")
        specials.append(s)
    probs = []
    for name, p in (("mask_prob", mask_prob), ("random_prob", random_prob)):
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"{name} must be a float, got {type(p).__name__}")
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {p}")
        probs.append(float(p))
    if probs[0] + probs[1] > 1.0 + 1e-9:
        raise ValueError(f"mask_prob + random_prob must be <= 1, got {probs[0]} + {probs[1]}")
    n_excluded = len(set(specials) | {mask_token_id})
    if probs[1] > 0.0 and n_excluded >= vocab:
        raise ValueError(
            f"vocab_size={vocab} leaves no token for random replacement after excluding special_ids and "
            "mask_token_id; set random_prob=0"
        )
    return mask_token_id, vocab, tuple(sorted(set(specials))), probs[0], probs[1]


def _dense_word_groups(word_ids: Tensor, eligible: Tensor) -> tuple[Tensor, Tensor]:
    """Renumber each row's eligible word ids to ``0..W_b-1``.

    Returns ``group [B, L]`` (long, ``< W_b`` for eligible tokens, arbitrary elsewhere) and
    ``num_words [B]``.
    """
    big = torch.iinfo(torch.long).max
    key = torch.where(eligible, word_ids, torch.full_like(word_ids, big))
    sorted_key, perm = torch.sort(key, dim=1, stable=True)
    starts = torch.ones_like(sorted_key, dtype=torch.bool)
    starts[:, 1:] = sorted_key[:, 1:] != sorted_key[:, :-1]
    group_sorted = starts.to(torch.long).cumsum(dim=1) - 1
    group = torch.empty_like(group_sorted).scatter_(1, perm, group_sorted)
    num_words = (starts & (sorted_key != big)).sum(dim=1)
    return group, num_words


def mask_tokens(
    input_ids: Tensor,
    valid: Tensor,
    ratio: float,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_ids: Sequence[int] = (),
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
    word_ids: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> TokenMasking:
    """Choose tokens to predict and corrupt them (see the module docstring for the rules).

    Args:
        input_ids: long ``[B, L]`` token ids.
        valid: bool ``[B, L]``, ``True`` = real token (``False`` = padding, never chosen).
        ratio: fraction of each sample's maskable tokens (or words), in ``[0, 1)``.
        mask_token_id: id written at ``mask_prob`` of the chosen tokens.
        vocab_size: random replacements are drawn from ``[0, vocab_size)``.
        special_ids: ids never chosen nor drawn as replacements (CLS, SEP, PAD, ...).
        mask_prob: probability a chosen token becomes ``mask_token_id`` (default 0.8).
        random_prob: probability a chosen token becomes a random token (default 0.1); the rest keep
            their id.
        word_ids: optional long ``[B, L]`` word index per token (``-1`` = not a word) for whole-word
            masking; the count is then in words.
        generator: optional ``torch.Generator`` on ``input_ids``' device.
    Returns:
        :class:`TokenMasking` (``input_ids`` corrupted, ``mask``, ``labels`` with ``-100`` elsewhere).
    """
    check_tensor("input_ids", input_ids, ndim=2, dtype=torch.long)
    b, length = input_ids.shape
    check_tensor("valid", valid, shape=(b, length), dtype=torch.bool)
    if word_ids is not None:
        check_tensor("word_ids", word_ids, shape=(b, length), dtype=torch.long)
    ratio = check_ratio("ratio", ratio)
    mask_token_id, vocab, specials, p_mask, p_rand = _check_config(
        mask_token_id, vocab_size, special_ids, mask_prob, random_prob
    )
    dev = check_same_device(input_ids=input_ids, valid=valid, word_ids=word_ids)
    check_generator("generator", generator, dev)

    # Comparisons with Python scalars (a few special ids) avoid a host-to-device copy of an id list.
    maskable = valid
    for special in specials:
        maskable = maskable & (input_ids != special)

    if word_ids is None:
        counts = counts_to_mask(ratio, maskable.sum(dim=1), at_least_one=True)
        mask = select_per_row(maskable, counts, generator)
    else:
        in_word = maskable & (word_ids >= 0)
        group, num_words = _dense_word_groups(word_ids, in_word)
        counts = counts_to_mask(ratio, num_words, at_least_one=True)
        word_slots = torch.arange(length, device=dev).expand(b, length)
        chosen_words = select_per_row(word_slots < num_words.unsqueeze(1), counts, generator)
        mask = in_word & torch.gather(chosen_words, 1, group.clamp(max=length - 1))

    labels = torch.where(mask, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    u = torch.rand(b, length, generator=generator, device=dev)
    to_mask_token = mask & (u < p_mask)
    to_random = mask & (u >= p_mask) & (u < p_mask + p_rand)
    corrupted = torch.where(to_mask_token, torch.full_like(input_ids, mask_token_id), input_ids)
    if p_rand > 0.0:
        excluded = sorted(set(specials) | {mask_token_id})
        # j-th allowed id = j + #{excluded ids below it} = j + #{i : excluded[i] - i <= j}.
        pick = torch.randint(0, vocab - len(excluded), (b, length), generator=generator, device=dev)
        random_ids = pick
        for i, e in enumerate(excluded):
            random_ids = random_ids + (pick >= e - i).to(torch.long)
        corrupted = torch.where(to_random, random_ids, corrupted)
    return TokenMasking(input_ids=corrupted, mask=mask, labels=labels)


class TokenMasker(nn.Module):
    """Module form of :func:`mask_tokens`; the configuration is fixed at construction.

    Call as ``masker(input_ids, valid, word_ids=None, generator=None)``. With ``whole_word=True`` the
    call requires ``word_ids``; otherwise ``word_ids`` is ignored.
    """

    def __init__(
        self,
        ratio: float,
        *,
        mask_token_id: int,
        vocab_size: int,
        special_ids: Sequence[int] = (),
        mask_prob: float = 0.8,
        random_prob: float = 0.1,
        whole_word: bool = False,
    ) -> None:
        super().__init__()
        self.ratio = check_ratio("ratio", ratio)
        (self.mask_token_id, self.vocab_size, self.special_ids, self.mask_prob, self.random_prob) = (
            _check_config(mask_token_id, vocab_size, special_ids, mask_prob, random_prob)
        )
        self.whole_word = bool(whole_word)

    def forward(
        self,
        input_ids: Tensor,
        valid: Tensor,
        *,
        word_ids: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> TokenMasking:
        if self.whole_word and word_ids is None:
            raise ValueError("word_ids must be given: this TokenMasker was built with whole_word=True")
        return mask_tokens(
            input_ids,
            valid,
            self.ratio,
            mask_token_id=self.mask_token_id,
            vocab_size=self.vocab_size,
            special_ids=self.special_ids,
            mask_prob=self.mask_prob,
            random_prob=self.random_prob,
            word_ids=word_ids if self.whole_word else None,
            generator=generator,
        )

    def extra_repr(self) -> str:
        return (
            f"ratio={self.ratio}, mask_token_id={self.mask_token_id}, vocab_size={self.vocab_size}, "
            f"special_ids={self.special_ids}, mask_prob={self.mask_prob}, random_prob={self.random_prob}, "
            f"whole_word={self.whole_word}"
        )
