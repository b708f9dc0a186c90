"""masked_token_loss (callable head and fused chunked path) against a plain float64 reference."""

from __future__ import annotations

import pytest
import torch

from maskmm.losses import MaskedTokenLoss, fused_linear_cross_entropy, masked_token_loss

B, L, D, V = 3, 11, 13, 37


def _inputs(dtype=torch.float64, seed=0, p_mask=0.35):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, L, D, generator=g).to(dtype)
    labels = torch.randint(0, V, (B, L), generator=g)
    masked = torch.rand(B, L, generator=g) < p_mask
    labels = torch.where(masked, labels, torch.full_like(labels, -100))
    weight = (torch.randn(V, D, generator=g) / D**0.5).to(dtype)
    bias = (0.1 * torch.randn(V, generator=g)).to(dtype)
    teacher = torch.randn(B, L, V, generator=g).to(dtype)
    return hidden, labels, weight, bias, teacher


def _reference(hidden, labels, weight, bias, teacher_logits, alpha, eps):
    """Full-sequence logits in float64, explicit formulas, mean over labelled positions."""
    logits = hidden.double() @ weight.double().t() + bias.double()  # [B, L, V]
    logp = torch.log_softmax(logits, dim=-1)
    sel = labels != -100
    y = labels.clamp(min=0)
    nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    smooth = -logp.mean(-1)
    hard = (1 - eps) * nll + eps * smooth
    q = torch.softmax(teacher_logits.double(), dim=-1)
    soft = -(q * logp).sum(-1)
    per = (1 - alpha) * hard + alpha * soft
    n = sel.sum()
    return (per * sel).sum() / n.clamp(min=1), ((logits.argmax(-1) == y) & sel).sum() / n.clamp(min=1)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize(("alpha", "eps"), [(0.0, 0.0), (0.4, 0.0), (0.3, 0.1), (1.0, 0.0)])
def test_value_and_grads_match_reference(fused, alpha, eps) -> None:
    hidden, labels, weight, bias, teacher = _inputs()
    hidden.requires_grad_(True)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    if fused:
        head, kw = weight, {"bias": bias, "chunk_size": 4}
    else:
        head, kw = (lambda x: x @ weight.t() + bias), {}
    out = masked_token_loss(
        hidden,
        labels,
        head,
        soft_targets=teacher,
        soft_targets_are_logits=True,
        alpha=alpha,
        label_smoothing=eps,
        **kw,
    )
    grads = torch.autograd.grad(out.loss, (hidden, weight, bias))
    ref, ref_acc = _reference(hidden, labels, weight, bias, teacher, alpha, eps)
    ref_grads = torch.autograd.grad(ref, (hidden, weight, bias))
    torch.testing.assert_close(out.loss.double(), ref, rtol=1e-6, atol=1e-7)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), r, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.stats["accuracy"].double(), ref_acc.double())
    assert out.stats["num_masked"] == (labels != -100).sum()


def test_head_runs_on_masked_rows_only() -> None:
    hidden, labels, weight, _, _ = _inputs()
    seen = []

    def head(x):
        seen.append(x.shape[0])
        return x @ weight.t()

    masked_token_loss(hidden, labels, head)
    assert seen == [int((labels != -100).sum())]


@pytest.mark.parametrize("chunk_size", [1, 5, 1000, None])
def test_fused_equals_plain_for_any_chunking(chunk_size) -> None:
    torch.manual_seed(1)
    x = torch.randn(23, D, requires_grad=True)
    w = torch.randn(V, D, requires_grad=True)
    y = torch.randint(0, V, (23,))
    total, correct = fused_linear_cross_entropy(x, w, y, chunk_size=chunk_size, label_smoothing=0.05)
    (3.0 * total).backward()  # a non-unit upstream gradient is scaled through
    x2 = x.detach().clone().requires_grad_(True)
    w2 = w.detach().clone().requires_grad_(True)
    logits = x2.double() @ w2.double().t()
    ref = torch.nn.functional.cross_entropy(logits, y, reduction="sum", label_smoothing=0.05)
    (3.0 * ref).backward()
    torch.testing.assert_close(total.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, x2.grad.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w.grad, w2.grad.float(), rtol=1e-4, atol=1e-5)
    assert correct == (logits.argmax(-1) == y).sum()


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float16, 2e-2), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("fused", [False, True])
def test_low_precision_forward(dtype, tol, fused) -> None:
    hidden, labels, weight, bias, teacher = _inputs(torch.float32)
    h, w, b = hidden.to(dtype), weight.to(dtype), bias.to(dtype)
    head = w if fused else (lambda x: x @ w.t() + b)
    out = masked_token_loss(
        h,
        labels,
        head,
        bias=b if fused else None,
        soft_targets=teacher,
        soft_targets_are_logits=True,
        alpha=0.4,
    )
    ref, _ = _reference(h, labels, w, b, teacher, 0.4, 0.0)
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(out.loss.double(), ref, rtol=tol, atol=tol)
    if fused and dtype == torch.float16:
        h.requires_grad_(True)
        w.requires_grad_(True)
        out = masked_token_loss(h, labels, w, bias=b)
        out.loss.backward()
        assert h.grad.dtype == dtype and w.grad.dtype == dtype and torch.isfinite(w.grad).all()


def test_soft_targets_given_as_gathered_probabilities() -> None:
    hidden, labels, weight, bias, teacher = _inputs()
    sel = labels != -100
    probs = torch.softmax(teacher[sel], dim=-1)
    a = masked_token_loss(hidden, labels, weight, bias=bias, soft_targets=probs, alpha=0.5).loss
    b = masked_token_loss(
        hidden, labels, weight, bias=bias, soft_targets=teacher, soft_targets_are_logits=True, alpha=0.5
    ).loss
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("fused", [False, True])
def test_no_masked_position_gives_zero_loss_and_zero_grads(fused) -> None:
    hidden, _, _, _, teacher = _inputs()
    labels = torch.full((B, L), -100)
    hidden.requires_grad_(True)
    module = MaskedTokenLoss(torch.nn.Linear(D, V, dtype=torch.float64), fused=fused)
    out = module(hidden, labels, soft_targets=teacher, soft_targets_are_logits=True, alpha=0.4)
    assert out.loss.item() == 0.0 and out.loss.requires_grad
    out.loss.backward()
    assert torch.equal(hidden.grad, torch.zeros_like(hidden))
    assert torch.equal(module.head.weight.grad, torch.zeros_like(module.head.weight))
    assert out.stats["accuracy"] == 0 and out.stats["num_masked"] == 0


def test_module_fused_matches_module_plain() -> None:
    hidden, labels, _, _, _ = _inputs(torch.float32)
    head = torch.nn.Linear(D, V)
    plain = MaskedTokenLoss(head, label_smoothing=0.1)(hidden, labels)
    fused = MaskedTokenLoss(head, fused=True, label_smoothing=0.1, chunk_size=3)(hidden, labels)
    torch.testing.assert_close(plain.loss, fused.loss)
    torch.testing.assert_close(plain.stats["accuracy"], fused.stats["accuracy"])


def test_bad_inputs_raise() -> None:
    hidden, labels, weight, _, teacher = _inputs()
    with pytest.raises(TypeError, match="labels"):
        masked_token_loss(hidden, labels.int(), weight)
    with pytest.raises(ValueError, match="soft_targets"):
        masked_token_loss(hidden, labels, weight, alpha=0.3)
    with pytest.raises(ValueError, match="head"):
        masked_token_loss(hidden, labels, weight[:, :-1])
    with pytest.raises(ValueError, match="alpha"):
        masked_token_loss(hidden, labels, weight, soft_targets=teacher, alpha=1.5)
    with pytest.raises(ValueError, match="soft_targets"):
        masked_token_loss(hidden, labels, weight, soft_targets=teacher[:, :, :-1], alpha=0.3)
    with pytest.raises(TypeError, match="head"):
        masked_token_loss(hidden, labels, "linear")


def _count_matmuls(fn) -> int:
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm):
                Count.n += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.n


def test_fused_skips_gradient_work_under_no_grad() -> None:
    x = torch.randn(10, D, requires_grad=True)
    w = torch.randn(V, D, requires_grad=True)
    y = torch.randint(0, V, (10,))
    with_grad = _count_matmuls(lambda: fused_linear_cross_entropy(x, w, y, chunk_size=5))
    with torch.no_grad():
        no_grad = _count_matmuls(lambda: fused_linear_cross_entropy(x, w, y, chunk_size=5))
        total, _ = fused_linear_cross_entropy(x, w, y, chunk_size=5)
    assert with_grad == 6 and no_grad == 2  # logits (+ grad_x, grad_w) per chunk
    assert not total.requires_grad
    ref = torch.nn.functional.cross_entropy(x.detach().double() @ w.detach().double().t(), y, reduction="sum")
    torch.testing.assert_close(total.double(), ref, rtol=1e-5, atol=1e-5)


def test_bad_config_raises_naming_the_argument() -> None:
    hidden, labels, weight, _, teacher = _inputs()
    with pytest.raises(TypeError, match="alpha"):
        masked_token_loss(hidden, labels, weight, soft_targets=teacher, alpha="0.4")
    with pytest.raises(ValueError, match="label_smoothing"):
        masked_token_loss(hidden, labels, weight, label_smoothing=1.0)
    with pytest.raises(ValueError, match="chunk_size"):
        masked_token_loss(hidden, labels, weight, chunk_size=0)
    with pytest.raises(ValueError, match="label_smoothing"):
        MaskedTokenLoss(label_smoothing=-0.1)
    with pytest.raises(TypeError, match="head"):
        MaskedTokenLoss(head="linear")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="alpha"):
        fused_linear_cross_entropy(hidden[0], weight, labels[0].clamp(min=0), alpha=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize(
    ("bad", "words"), [(V, f"maximum {V}"), (V + 50, f"maximum {V + 50}"), (-1, "minimum -1")]
)
def test_labels_outside_the_vocabulary_raise_naming_labels(fused, bad, words) -> None:
    hidden, labels, weight, bias, _ = _inputs()
    labels = labels.clone()
    labels[1, 4] = bad  # one scored position outside [0, V) (and not the ignore index)
    head = weight if fused else (lambda x: x @ weight.t() + bias)
    with pytest.raises(ValueError) as info:
        masked_token_loss(hidden, labels, head, bias=bias if fused else None)
    message = str(info.value)
    assert message.startswith(f"labels must lie in [0, {V})") and "ignore_index = -100" in message
    assert words in message
    module = MaskedTokenLoss(torch.nn.Linear(D, V, dtype=torch.float64), fused=fused)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 37\)"):
        module(hidden, labels)


def test_labels_at_the_vocabulary_edges_and_another_ignore_index_are_accepted() -> None:
    hidden, labels, weight, bias, teacher = _inputs()
    labels = labels.clone()
    labels[0, :3] = torch.tensor([0, V - 1, -100])
    ref, _ = _reference(hidden, labels, weight, bias, teacher, 0.0, 0.0)
    for head, kw in ((weight, {"bias": bias}), (lambda x: x @ weight.t() + bias, {})):
        out = masked_token_loss(hidden, labels, head, **kw)
        torch.testing.assert_close(out.loss.double(), ref, rtol=1e-6, atol=1e-7)
        # with ignore_index=-1, the -100 entries are scored labels, hence out of range
        with pytest.raises(ValueError, match="minimum -100"):
            masked_token_loss(hidden, labels, head, ignore_index=-1, **kw)
        shifted = torch.where(labels == -100, torch.full_like(labels, -1), labels)
        out = masked_token_loss(hidden, shifted, head, ignore_index=-1, **kw)
        torch.testing.assert_close(out.loss.double(), ref, rtol=1e-6, atol=1e-7)


def test_fused_target_outside_the_vocabulary_raises() -> None:
    x = torch.randn(6, D)
    w = torch.randn(V, D)
    with pytest.raises(ValueError, match=rf"target must lie in \[0, {V}\).*maximum {V}"):
        fused_linear_cross_entropy(x, w, torch.tensor([0, 1, 2, 3, 4, V]))
    with pytest.raises(ValueError, match=r"target.*minimum -100"):
        fused_linear_cross_entropy(x, w, torch.tensor([0, 1, -100, 3, 4, 5]))
    with pytest.raises(TypeError, match="check_values"):
        fused_linear_cross_entropy(x, w, torch.zeros(6, dtype=torch.long), check_values="no")
    total, _ = fused_linear_cross_entropy(x, w, torch.tensor([0, 1, 2, 3, 4, V - 1]), check_values=False)
    ref = torch.nn.functional.cross_entropy(x @ w.t(), torch.tensor([0, 1, 2, 3, 4, V - 1]), reduction="sum")
    torch.testing.assert_close(total, ref, rtol=1e-5, atol=1e-5)


def test_label_check_is_one_small_host_read(monkeypatch) -> None:
    """``masked_token_loss`` checks the labels once per call, on the scored labels only, with the
    fused head's own target check turned off (no second read)."""
    import maskmm.losses.linear_cross_entropy as lce
    import maskmm.losses.masked_token as mt

    seen = []
    real = mt.check_class_indices

    def counting(name, value, num_classes, **kwargs):
        seen.append((name, value.numel(), num_classes))
        return real(name, value, num_classes, **kwargs)

    monkeypatch.setattr(mt, "check_class_indices", counting)
    monkeypatch.setattr(lce, "check_class_indices", counting)
    hidden, labels, weight, bias, _ = _inputs()
    scored = int((labels != -100).sum())
    for head in (weight, lambda x: x @ weight.t() + bias):
        seen.clear()
        masked_token_loss(hidden, labels, head)
        assert seen == [("labels", scored, V)]
