"""Options every encoder honours, checked on each of them: every attention backend available on
this machine gives the reference backend's outputs and gradients; activation checkpointing
gives the same gradients; bf16/fp16 autocast runs close to fp32; ``torch.compile`` traces the
whole forward (attention path included) without a graph break, with the default backend."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from maskmm.attention import available_backends
from maskmm.masking import random_patch_masking
from maskmm.nn import (
    FusionConfig,
    PredictionDecoder,
    TextConfig,
    TextEncoder,
    VisionConfig,
    VisionTransformer,
    build_fusion_encoder,
)

D = 16


def _fusion(kind: str):
    cfg = FusionConfig(
        kind=kind,
        dim=D,
        depth=2,
        num_heads=2,
        intermediate_size=24,
        image_dim=12,
        dropout=0.0,
        attn_dropout=0.0,
    )
    return build_fusion_encoder(cfg)


def _case(name: str) -> tuple[torch.nn.Module, Callable[[torch.nn.Module], torch.Tensor], list[torch.Tensor]]:
    """(model, run(model) -> one output tensor with the padded positions dropped, inputs that
    take gradients)."""
    g = torch.Generator().manual_seed(11)
    text_valid = torch.tensor([[1] * 5, [1, 1, 0, 1, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    image_valid = torch.tensor([[1] * 4, [1, 0, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)  # last: no key
    text = torch.randn(3, 5, D, generator=g, requires_grad=True)
    image = torch.randn(3, 4, 12, generator=g, requires_grad=True)
    if name.startswith("vit"):
        model = VisionTransformer(
            VisionConfig(image_size=(16, 24), patch_size=8, dim=D, depth=2, num_heads=2)
        )
        images = torch.randn(3, 3, 16, 24, generator=g, requires_grad=True)
        masking = random_patch_masking(3, 6, 0.5, generator=g)
        mode = "drop" if name == "vit_drop" else "token"
        return model, lambda m: m(images, masking=masking, mask_mode=mode).last_hidden, [images]
    if name == "text":
        model = TextEncoder(
            TextConfig(
                vocab_size=40,
                dim=D,
                depth=2,
                num_heads=2,
                intermediate_size=24,
                max_position=8,
                dropout=0.0,
                attn_dropout=0.0,
            )
        )
        ids = torch.randint(1, 40, (3, 5), generator=g)
        return model, lambda m: m(ids, text_valid).last_hidden[text_valid], []
    if name == "decoder":
        model = PredictionDecoder(D, 7, dim=D, depth=2, num_heads=2, cross_attend=True, context_dim=12)
        return (
            model,
            lambda m: m(text, text_valid, context=image, context_valid=image_valid)[text_valid],
            [
                text,
                image,
            ],
        )

    def run(m: torch.nn.Module) -> torch.Tensor:
        out = m(image, image_valid, text, text_valid)
        if out.image is None:
            return out.text[text_valid]
        return torch.cat([out.text[text_valid], out.image[image_valid]])

    return _fusion(name), run, [text, image]


CASES = ["vit_drop", "vit_token", "text", "merged", "cross", "coattention", "decoder"]
BACKENDS = [b for b in ("sdpa", "flex", "triton", "xformers") if b in available_backends(torch.device("cpu"))]


def _grads(model: torch.nn.Module, out: torch.Tensor, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    params = [p for p in model.parameters() if p.requires_grad]
    w = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    return torch.autograd.grad((out * w).sum(), params + inputs, allow_unused=True)


def _close_grads(got, want, tol: float) -> None:
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=tol, rtol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES)
def test_every_backend_matches_the_reference_backend(case: str, backend: str) -> None:
    model, run, inputs = _case(case)
    model.eval()
    model.set_attention_backend("reference")
    want = run(model)
    want_grads = _grads(model, want, inputs)
    model.set_attention_backend(backend)
    if backend == "flex":  # FlexAttention has no backward on the CPU: forward only
        with torch.no_grad():
            torch.testing.assert_close(run(model), want.detach(), atol=2e-5, rtol=2e-5)
        return
    got = run(model)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)
    _close_grads(_grads(model, got, inputs), want_grads, 1e-4)


@pytest.mark.parametrize("case", CASES)
def test_activation_checkpointing_gives_the_same_gradients(case: str) -> None:
    model, run, inputs = _case(case)
    model.train()
    model.grad_checkpointing = False
    want = run(model)
    want_grads = _grads(model, want, inputs)
    model.grad_checkpointing = True
    got = run(model)
    torch.testing.assert_close(got, want)
    _close_grads(_grads(model, got, inputs), want_grads, 1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES)
def test_autocast_runs_close_to_float32(case: str, dtype: torch.dtype) -> None:
    model, run, _ = _case(case)
    model.eval()
    want = run(model)
    with torch.autocast("cpu", dtype=dtype):
        got = run(model)
        (g,) = torch.autograd.grad(got.float().sum(), [next(model.parameters())])
    assert torch.isfinite(got).all() and torch.isfinite(g).all()
    tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
    torch.testing.assert_close(got.float(), want, atol=tol, rtol=tol)


@pytest.mark.parametrize("case", CASES)
def test_compile_traces_the_whole_forward_without_graph_breaks(case: str) -> None:
    model, run, inputs = _case(case)
    model.train()  # default "auto" backend, grad enabled, checkpointing on
    model.grad_checkpointing = True
    want = run(model)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    got = run(compiled)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    _close_grads(_grads(compiled, got, inputs), _grads(model, want, inputs), 1e-5)
