from __future__ import annotations

import math

import pytest
import torch

from maskmm.masking import TokenMasker, mask_tokens

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIALS = (PAD, CLS, SEP, MASK)
VOCAB = 41


def _batch(b: int, length: int, seed: int):
    """Random captions: CLS w1 .. wn SEP PAD..., n random (possibly 0)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (b, length), generator=g)
    lengths = torch.randint(2, length + 1, (b,), generator=g)
    valid = torch.arange(length).expand(b, length) < lengths.unsqueeze(1)
    ids[:, 0] = CLS
    ids[torch.arange(b), lengths - 1] = SEP
    ids[~valid] = PAD
    return ids, valid


def _expected_count(ratio: float, n: int) -> int:
    if n == 0:
        return 0
    k = math.floor(ratio * n + 0.5)
    return min(n, max(k, 1 if ratio > 0 else 0))


def _call(ids, valid, ratio, seed=0, **kw):
    kw.setdefault("special_ids", SPECIALS)
    return mask_tokens(
        ids,
        valid,
        ratio,
        mask_token_id=MASK,
        vocab_size=VOCAB,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.15, 0.25, 0.5, 0.9])
def test_exact_counts_and_exclusions(ratio: float) -> None:
    ids, valid = _batch(40, 19, seed=1)
    out = _call(ids, valid, ratio)
    for b in range(40):
        maskable = [i for i in range(19) if bool(valid[b, i]) and int(ids[b, i]) not in SPECIALS]
        assert int(out.mask[b].sum()) == _expected_count(ratio, len(maskable))
        chosen = [i for i in range(19) if bool(out.mask[b, i])]
        assert set(chosen) <= set(maskable)
    assert torch.equal(out.labels, torch.where(out.mask, ids, torch.full_like(ids, -100)))
    assert torch.equal(out.input_ids[~out.mask], ids[~out.mask])


def test_edge_rows() -> None:
    ids = torch.tensor([[CLS, SEP, PAD, PAD], [CLS, 7, SEP, PAD], [CLS, 7, 8, SEP], [PAD, PAD, PAD, PAD]])
    valid = ids != PAD
    out = _call(ids, valid, 0.1, mask_prob=1.0, random_prob=0.0)
    assert out.mask.sum(1).tolist() == [0, 1, 1, 0]  # no maskable token -> none; otherwise at least one
    assert out.mask[1].tolist() == [False, True, False, False]
    assert out.input_ids[1].tolist() == [CLS, MASK, SEP, PAD]
    none = _call(ids, valid, 0.0)
    assert not none.mask.any() and torch.equal(none.input_ids, ids) and (none.labels == -100).all()


def test_positions_equally_likely() -> None:
    draws, length = 6000, 9
    ids = torch.randint(4, VOCAB, (draws, length))
    ids[:, 0] = CLS
    valid = torch.ones(draws, length, dtype=torch.bool)
    out = _call(ids, valid, 0.25)  # 8 maskable -> 2 per row
    freq = out.mask[:, 1:].double().sum(0)
    p = 2 / 8
    assert not out.mask[:, 0].any()
    assert (freq - draws * p).abs().max() < 5 * math.sqrt(draws * p * (1 - p))


@pytest.mark.parametrize(("p_mask", "p_rand"), [(0.8, 0.1), (0.5, 0.5), (0.0, 1.0), (1.0, 0.0)])
def test_corruption_proportions(p_mask: float, p_rand: float) -> None:
    ids, valid = _batch(3000, 23, seed=2)
    out = _call(ids, valid, 0.3, seed=3, mask_prob=p_mask, random_prob=p_rand)
    chosen = out.mask
    n = int(chosen.sum())
    was_mask = (out.input_ids == MASK) & chosen
    kept = (out.input_ids == ids) & chosen
    changed = chosen & ~was_mask & (out.input_ids != ids)
    # a random replacement can hit the original id (prob 1/37): counted within "kept"
    p_same = 1.0 / (VOCAB - len(SPECIALS))
    exp = {"mask": p_mask, "rand": p_rand * (1 - p_same), "kept": (1 - p_mask - p_rand) + p_rand * p_same}
    got = {"mask": int(was_mask.sum()), "rand": int(changed.sum()), "kept": int(kept.sum())}
    for key, p in exp.items():
        sd = math.sqrt(n * p * (1 - p))
        assert abs(got[key] - n * p) <= 5 * sd + 1e-9, (key, got[key], n * p)
    replaced = out.input_ids[changed]
    assert bool(((replaced >= 0) & (replaced < VOCAB)).all())
    assert not bool(torch.isin(replaced, torch.tensor(SPECIALS)).any())


def test_random_tokens_cover_allowed_vocab_uniformly() -> None:
    vocab, specials = 12, (0, 5, 11)
    ids = torch.full((4000, 16), 7)
    valid = torch.ones_like(ids, dtype=torch.bool)
    out = mask_tokens(
        ids,
        valid,
        0.5,
        mask_token_id=3,
        vocab_size=vocab,
        special_ids=specials,
        mask_prob=0.0,
        random_prob=1.0,
        generator=torch.Generator().manual_seed(4),
    )
    drawn = out.input_ids[out.mask]
    allowed = [i for i in range(vocab) if i not in (*specials, 3)]
    counts = torch.bincount(drawn, minlength=vocab).double()
    n, p = drawn.numel(), 1 / len(allowed)
    for i in range(vocab):
        if i in allowed:
            assert abs(counts[i] - n * p) < 5 * math.sqrt(n * p * (1 - p))
        else:
            assert counts[i] == 0


def test_whole_word_masking() -> None:
    b, length = 64, 21
    ids, valid = _batch(b, length, seed=5)
    g = torch.Generator().manual_seed(6)
    # words of 1-3 sub-tokens with arbitrary, non-contiguous ids; -1 on CLS/SEP/PAD
    word_ids = torch.full((b, length), -1, dtype=torch.long)
    for bi in range(b):
        pos, wid = 1, int(torch.randint(0, 50, (1,), generator=g))
        while pos < length:
            span = int(torch.randint(1, 4, (1,), generator=g))
            word_ids[bi, pos : pos + span] = wid
            pos += span
            wid += int(torch.randint(1, 5, (1,), generator=g))
    maskable = valid & ~torch.isin(ids, torch.tensor(SPECIALS))
    word_ids[~maskable] = -1
    for ratio in (0.0, 0.15, 0.4):
        out = _call(ids, valid, ratio, seed=7, word_ids=word_ids)
        for bi in range(b):
            words = {}
            for i in range(length):
                if word_ids[bi, i] >= 0:
                    words.setdefault(int(word_ids[bi, i]), []).append(bool(out.mask[bi, i]))
            assert all(len(set(v)) == 1 for v in words.values())  # whole words only
            n_chosen = sum(v[0] for v in words.values())
            assert n_chosen == _expected_count(ratio, len(words))
            assert not bool((out.mask[bi] & (word_ids[bi] < 0)).any())


def test_whole_word_counts_words_not_tokens() -> None:
    ids = torch.tensor([[CLS, 10, 11, 12, 13, 14, 15, SEP]])
    word_ids = torch.tensor([[-1, 4, 4, 4, 4, 9, 9, -1]])
    valid = torch.ones_like(ids, dtype=torch.bool)
    out = _call(ids, valid, 0.5, word_ids=word_ids, mask_prob=1.0, random_prob=0.0)
    assert out.mask[0].tolist() in (
        [False, True, True, True, True, False, False, False],
        [False, False, False, False, False, True, True, False],
    )


def test_determinism_and_module() -> None:
    ids, valid = _batch(8, 15, seed=8)
    a, b, c = _call(ids, valid, 0.3, seed=1), _call(ids, valid, 0.3, seed=1), _call(ids, valid, 0.3, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.mask, c.mask)
    masker = TokenMasker(0.3, mask_token_id=MASK, vocab_size=VOCAB, special_ids=SPECIALS)
    m = masker(ids, valid, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(a, m))
    with pytest.raises(ValueError, match="word_ids"):
        TokenMasker(0.3, mask_token_id=MASK, vocab_size=VOCAB, whole_word=True)(ids, valid)


def test_bad_inputs_name_the_argument() -> None:
    ids, valid = _batch(2, 6, seed=0)
    with pytest.raises(TypeError, match="input_ids"):
        _call(ids.int(), valid, 0.2)
    with pytest.raises(ValueError, match="valid"):
        _call(ids, valid[:, :5], 0.2)
    with pytest.raises(TypeError, match="valid"):
        _call(ids, valid.long(), 0.2)
    with pytest.raises(ValueError, match="word_ids"):
        _call(ids, valid, 0.2, word_ids=torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="ratio"):
        _call(ids, valid, 1.0)
    with pytest.raises(ValueError, match="mask_token_id"):
        mask_tokens(ids, valid, 0.2, mask_token_id=VOCAB, vocab_size=VOCAB)
    with pytest.raises(ValueError, match="special_ids"):
        mask_tokens(ids, valid, 0.2, mask_token_id=3, vocab_size=VOCAB, special_ids=(-1,))
    with pytest.raises(ValueError, match="random_prob"):
        _call(ids, valid, 0.2, mask_prob=0.8, random_prob=0.3)
    with pytest.raises(ValueError, match="mask_prob"):
        _call(ids, valid, 0.2, mask_prob=1.5)
    with pytest.raises(ValueError, match="vocab_size"):
        mask_tokens(ids, valid, 0.2, mask_token_id=1, vocab_size=3, special_ids=(0, 2))
    with pytest.raises(ValueError, match="generator"):
        mask_tokens(
            ids.to("meta"),
            valid.to("meta"),
            0.2,
            mask_token_id=3,
            vocab_size=VOCAB,
            generator=torch.Generator(),
        )
    with pytest.raises(ValueError, match="valid"):
        mask_tokens(ids, valid.to("meta"), 0.2, mask_token_id=3, vocab_size=VOCAB)
