"""``torch.compile`` traces the sdpa/reference attention path without graph breaks (CPU)."""

from __future__ import annotations

import pytest
import torch

from maskmm.attention import AttentionMask, masked_attention


def _inputs():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 2, 5, 16, generator=g)
    k = torch.randn(2, 2, 7, 16, generator=g)
    v = torch.randn(2, 2, 7, 16, generator=g)
    key_valid = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    query_valid = torch.tensor([[1, 1, 0, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    return q, k, v, key_valid, query_valid


@pytest.mark.parametrize("backend", ["auto", "sdpa", "reference"])
def test_mask_built_inside_compiled_function_no_graph_break(backend):
    q, k, v, key_valid, query_valid = _inputs()

    def f(q, k, v, key_valid, query_valid):
        mask = AttentionMask.from_key_valid(key_valid, query_valid)  # built once per "forward"
        h = masked_attention(q, k, v, mask, backend=backend)
        return masked_attention(h, k, v, mask, backend=backend)  # second layer reuses the caches

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")  # raises on any graph break
    q.requires_grad_()
    out = compiled(q, k, v, key_valid, query_valid)
    ref = f(q, k, v, key_valid, query_valid)
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    assert torch.equal(q.grad[1], torch.zeros_like(q.grad[1]))


def test_mask_passed_in_and_lengths_no_graph_break():
    q, k, v, _, _ = _inputs()
    mask = AttentionMask.from_key_lengths(torch.tensor([3, 0]), 7)

    def f(q, k, v):
        return masked_attention(q, k, v, mask, backend="sdpa")

    torch._dynamo.reset()
    explanation = torch._dynamo.explain(f)(q, k, v)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    torch.testing.assert_close(torch.compile(f, fullgraph=True, backend="eager")(q, k, v), f(q, k, v))
