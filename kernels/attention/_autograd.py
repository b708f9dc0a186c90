"""``torch.autograd.Function`` around the attention kernels.

Eager calls go straight to the launchers. While ``torch.compile`` traces, the same launchers
are called through their custom-op registration (``torch.ops.maskmm.flash_attn_fwd/bwd``) so
the graph holds one opaque op per pass; the custom-op dispatch (tens of microseconds on the
host) is thus paid only where a compiled graph amortises it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _launch
from ._launch import AttnProblem
from ._ops import attn_bwd_op, attn_fwd_op, problem_args

__all__ = ["FlashAttentionFn"]


class FlashAttentionFn(torch.autograd.Function):
    """Differentiable in ``q``, ``k``, ``v``; saves ``out`` and the fp32 row LSE for backward."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, problem: AttnProblem) -> Tensor:  # type: ignore[override]
        if torch.compiler.is_compiling():
            out, lse = attn_fwd_op(q, k, v, *problem_args(problem))
        else:
            out, lse = _launch.forward(q, k, v, problem)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.problem = problem
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        q, k, v, out, lse = ctx.saved_tensors
        if torch.compiler.is_compiling():
            dq, dk, dv = attn_bwd_op(grad_out, q, k, v, out, lse, *problem_args(ctx.problem))
        else:
            dq, dk, dv = _launch.backward(grad_out, q, k, v, out, lse, ctx.problem)
        return dq, dk, dv, None
