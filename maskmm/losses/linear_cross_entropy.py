"""Linear layer + cross-entropy in row chunks, without materialising all ``[M, V]`` logits.

Forward computes, chunk by chunk, the logits of ``chunk_size`` rows, their
loss, and (when gradients are needed) the gradients of the loss with respect to
the input rows, the weight and the bias. Only one ``[chunk_size, V]`` block of
logits is alive at a time; the saved state is ``grad_x [M, D]`` (input dtype),
``grad_weight [V, D]`` and ``grad_bias [V]`` (fp32 accumulators). Backward
only scales them by the incoming scalar gradient. The loss is differentiable
once (no double backward).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from maskmm._checks import (
    check_bool,
    check_class_indices,
    check_floating,
    check_int,
    check_ratio,
    check_same_device,
    check_tensor,
)

__all__ = ["fused_linear_cross_entropy"]

# Rows per chunk are chosen so that one chunk of fp32 logits holds about this many elements.
_CHUNK_ELEMENTS = 1 << 22


def _auto_chunk(m: int, v: int) -> int:
    rows = max(1, _CHUNK_ELEMENTS // max(v, 1))
    if m <= rows:
        return max(m, 1)
    n_chunks = math.ceil(m / rows)
    return math.ceil(m / n_chunks)


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        target: Tensor,
        soft: Tensor | None,
        alpha: float,
        smoothing: float,
        chunk: int,
        grad_enabled: bool,
    ) -> tuple[Tensor, Tensor]:
        m = x.shape[0]
        v = weight.shape[0]
        # ``needs_input_grad`` ignores ``torch.no_grad()``: skip the gradient work there explicitly.
        need_x, need_w, need_b = (grad_enabled and n for n in ctx.needs_input_grad[:3])
        need_b = need_b and bias is not None
        hard_w = 1.0 - alpha
        acc = torch.promote_types(x.dtype, torch.float32)
        loss = torch.zeros((), dtype=acc, device=x.device)
        correct = torch.zeros((), dtype=torch.float32, device=x.device)
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=x.device) if need_w else None
        grad_b = torch.zeros(v, dtype=acc, device=x.device) if need_b else None
        for start in range(0, m, chunk):
            end = min(start + chunk, m)
            xc = x[start:end]
            logits = xc @ weight.t() if bias is None else torch.addmm(bias, xc, weight.t())
            z = logits.to(acc)
            del logits
            y = target[start:end]
            lse = torch.logsumexp(z, dim=-1)
            z_y = z.gather(1, y.unsqueeze(1)).squeeze(1)
            hard = lse - (1.0 - smoothing) * z_y
            if smoothing > 0.0:
                hard = hard - smoothing * z.mean(-1)
            row = hard_w * hard
            if soft is not None:
                q = soft[start:end].to(acc)
                qs = q.sum(-1)
                row = row + alpha * (qs * lse - (q * z).sum(-1))
            loss += row.sum()
            correct += (z.argmax(-1) == y).sum()
            if need_x or need_w or need_b:
                # d row / d z = (1-a) (p - (1-eps) onehot(y) - eps/V) + a (p * sum(q) - q)
                p = torch.exp(z - lse.unsqueeze(1))
                scale = hard_w if soft is None else hard_w + alpha * qs.unsqueeze(1)
                g = p * scale
                g.scatter_add_(
                    1, y.unsqueeze(1), torch.full_like(z_y, -hard_w * (1.0 - smoothing)).unsqueeze(1)
                )
                if smoothing > 0.0:
                    g -= hard_w * smoothing / v
                if soft is not None:
                    g -= alpha * q
                gd = g.to(x.dtype)
                if need_x:
                    grad_x[start:end] = gd @ weight
                if need_w:
                    grad_w += (gd.t() @ xc).to(acc)
                if need_b:
                    grad_b += g.sum(0)
        ctx.save_for_backward(grad_x, grad_w, grad_b)
        ctx.w_dtype = weight.dtype
        ctx.b_dtype = bias.dtype if bias is not None else None
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_correct: Tensor):
        grad_x, grad_w, grad_b = ctx.saved_tensors
        s = grad_loss
        gx = (grad_x * s.to(grad_x.dtype)) if grad_x is not None else None
        gw = (grad_w * s).to(ctx.w_dtype) if grad_w is not None else None
        gb = (grad_b * s).to(ctx.b_dtype) if grad_b is not None else None
        return gx, gw, gb, None, None, None, None, None, None


def fused_linear_cross_entropy(
    x: Tensor,
    weight: Tensor,
    target: Tensor,
    bias: Tensor | None = None,
    *,
    soft_targets: Tensor | None = None,
    alpha: float = 0.0,
    label_smoothing: float = 0.0,
    chunk_size: int | None = None,
    check_values: bool = True,
) -> tuple[Tensor, Tensor]:
    """Summed cross-entropy of ``x @ weight.T + bias`` against ``target``, computed in row chunks.

    Per row ``i`` with logits ``z_i``:
    ``(1 - alpha) * CE_eps(z_i, target_i) + alpha * (-sum_v q_iv log_softmax(z_i)_v)``,
    where ``CE_eps`` is cross-entropy with label smoothing ``eps`` (as ``F.cross_entropy``)
    and ``q`` are the soft targets (treated as constants).

    Args:
        x: ``[M, D]`` rows (fp32/fp16/bf16).
        weight: ``[V, D]`` (same dtype as ``x``).
        target: ``long [M]`` class indices in ``[0, V)`` (no ignore index: select rows first).
        bias: ``[V]`` or ``None``.
        soft_targets: ``[M, V]`` probabilities, required when ``alpha > 0``.
        alpha: weight of the soft term, in ``[0, 1]``.
        label_smoothing: in ``[0, 1)``.
        chunk_size: rows per chunk; default keeps a chunk of fp32 logits near 4M elements.
        check_values: verify ``0 <= target < V`` (one host read of the minimum and maximum of
            ``target``; a synchronisation on CUDA; skipped while ``torch.compile`` traces). Pass
            ``False`` only for targets checked already: an out-of-range target is an index error
            on CPU and a device-side assert on CUDA.

    Returns:
        ``(loss_sum, num_correct)``: fp32 scalars (fp64 for fp64 inputs); ``loss_sum`` is the *sum* over rows
        (differentiable w.r.t. ``x``, ``weight``, ``bias``); ``num_correct`` counts rows
        whose arg-max logit equals ``target`` (no gradient). ``M = 0`` gives zeros.

    Raises:
        TypeError / ValueError naming the argument; with ``check_values``, ``ValueError`` for a
        ``target`` outside ``[0, V)``.
    """
    check_floating("x", x, ndim=2)
    m, d = x.shape
    check_floating("weight", weight, shape=(None, d), dtype=x.dtype)
    v = weight.shape[0]
    check_tensor("target", target, shape=(m,), dtype=torch.long)
    if bias is not None:
        check_floating("bias", bias, shape=(v,), dtype=x.dtype)
    alpha = check_ratio("alpha", alpha, allow_one=True)
    label_smoothing = check_ratio("label_smoothing", label_smoothing)
    if soft_targets is not None:
        check_floating("soft_targets", soft_targets, shape=(m, v))
        soft_targets = soft_targets.detach()
    elif alpha > 0.0:
        raise ValueError(f"soft_targets [M, V] are required when alpha > 0, got alpha={alpha}")
    check_same_device(x=x, weight=weight, target=target, bias=bias, soft_targets=soft_targets)
    chunk_size = _auto_chunk(m, v) if chunk_size is None else check_int("chunk_size", chunk_size, minimum=1)
    if check_bool("check_values", check_values):
        check_class_indices("target", target, v, allowed=f" (V = {v}, the rows of weight)")
    if alpha == 0.0:
        soft_targets = None
    return _FusedLinearCrossEntropy.apply(
        x, weight, bias, target, soft_targets, alpha, label_smoothing, chunk_size, torch.is_grad_enabled()
    )
