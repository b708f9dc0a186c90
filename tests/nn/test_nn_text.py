"""BERT-style text encoder: float64 reference, padding invariance, backends, errors."""

from __future__ import annotations

import nn_reference as ref
import pytest
import torch

from maskmm.nn import TextConfig, TextEncoder

CFG = TextConfig(
    vocab_size=53,
    dim=20,
    depth=3,
    num_heads=4,
    intermediate_size=36,
    max_position=17,
    dropout=0.0,
    attn_dropout=0.0,
)


def _model(dtype=torch.float64, **kw) -> TextEncoder:
    return TextEncoder(TextConfig(**{**CFG.__dict__, **kw})).to(dtype)


def _batch(lengths: list[int], length: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, CFG.vocab_size, (len(lengths), length), generator=g)
    valid = torch.arange(length)[None] < torch.tensor(lengths)[:, None]
    ids = ids.masked_fill(~valid, CFG.pad_token_id)
    types = torch.randint(0, 2, ids.shape, generator=g)
    return ids, valid, types


def test_matches_reference_values_and_grads() -> None:
    model = _model()
    ids, valid, types = _batch([11, 5, 1], 11)
    valid[1, 2] = False  # a hole in the middle, not only right padding
    out = model(ids, valid, token_type_ids=types, return_layers=[1, -1])
    want, layers = ref.text(model, ids, valid, types)
    torch.testing.assert_close(out.last_hidden, want, atol=1e-10, rtol=1e-10)
    assert out.valid is valid
    torch.testing.assert_close(out.hidden_states[0], layers[1])
    torch.testing.assert_close(out.hidden_states[1], layers[2])
    g = torch.randn_like(want)
    params = [
        model.embeddings.word_embeddings.weight,
        model.layers[0].attn.qkv.weight,
        model.layers[2].norm2.bias,
    ]
    got = torch.autograd.grad((out.last_hidden * g)[valid].sum(), params)
    exp = torch.autograd.grad((want * g)[valid].sum(), params)
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("backend", ["sdpa", "reference"])
def test_extra_padding_never_changes_valid_states(backend: str) -> None:
    model = _model(torch.float32, attn_backend=backend).eval()
    ids, valid, _ = _batch([7, 3, 5], 7, seed=3)
    short = model(ids, valid).last_hidden
    pad = torch.randint(1, CFG.vocab_size, (3, 6))  # garbage ids at padded positions
    long = model(
        torch.cat([ids, pad], 1), torch.cat([valid, torch.zeros(3, 6, dtype=torch.bool)], 1)
    ).last_hidden
    torch.testing.assert_close(long[:, :7][valid], short[valid], atol=1e-5, rtol=1e-5)


def test_backends_agree_and_row_without_valid_token_is_finite() -> None:
    model = _model(torch.float32).eval()
    ids, valid, _ = _batch([6, 0, 2], 6)
    model.set_attention_backend("reference")
    want = model(ids, valid).last_hidden
    model.set_attention_backend("sdpa")
    got = model(ids, valid).last_hidden
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(ids, valid).last_hidden, want, atol=1e-5, rtol=1e-5)


def test_empty_batch_and_empty_text_are_defined() -> None:
    model = _model()
    ids, valid, types = _batch([4, 2], 4)
    out = model(ids[:0], valid[:0], token_type_ids=types[:0], return_layers=[0])
    assert out.last_hidden.shape == (0, 4, 20) and out.hidden_states[0].shape == (0, 4, 20)
    none = model(ids[:, :0], valid[:, :0])
    assert none.last_hidden.shape == (2, 0, 20)
    # one valid token attends only to itself
    one = model(ids[:, :3], torch.tensor([[True, False, False], [True, False, False]]))
    want, _ = ref.text(model, ids[:, :1], torch.ones(2, 1, dtype=torch.bool))
    torch.testing.assert_close(one.last_hidden[:, :1], want, atol=1e-10, rtol=1e-10)


def test_checkpointing_gives_same_grads() -> None:
    model = _model(torch.float32).train()
    ids, valid, _ = _batch([5, 4], 5)
    model(ids, valid).last_hidden.square().sum().backward()
    g1 = model.layers[1].mlp.fc1.weight.grad.clone()
    model.zero_grad()
    model.grad_checkpointing = True
    model(ids, valid).last_hidden.square().sum().backward()
    torch.testing.assert_close(model.layers[1].mlp.fc1.weight.grad, g1)


def test_bad_inputs_name_the_argument() -> None:
    model = _model(torch.float32)
    ids, valid, _ = _batch([3, 3], 3)
    with pytest.raises(ValueError, match="input_ids has length 18, longer than the position table"):
        model(torch.ones(1, 18, dtype=torch.long), torch.ones(1, 18, dtype=torch.bool))
    with pytest.raises(ValueError, match="valid must have shape"):
        model(ids, valid[:, :2])
    with pytest.raises(TypeError, match="valid"):
        model(ids, valid.long())
    with pytest.raises(TypeError, match="input_ids"):
        model(ids.float(), valid)
    with pytest.raises(ValueError, match="token_type_ids"):
        model(ids, valid, token_type_ids=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"TextConfig.dim"):
        TextConfig(dim=30, num_heads=4)
