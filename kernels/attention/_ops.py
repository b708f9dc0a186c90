"""The launchers registered as PyTorch custom operators (``torch.ops.maskmm.*``).

Registering them makes the kernels opaque to ``torch.compile``: graphs capture one op per
pass instead of tracing into Triton's launcher, and fake implementations give output
shapes and strides without running anything.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _launch
from ._launch import AttnProblem

__all__ = ["attn_bwd_op", "attn_fwd_op", "problem_args"]


def problem_args(p: AttnProblem) -> tuple:
    """The ``AttnProblem`` fields in the custom ops' argument order (block overrides: 0 = table)."""
    return (
        p.q_bound,
        p.k_bound,
        p.cu_q,
        p.cu_k,
        p.q_valid,
        p.k_valid,
        p.varlen,
        p.lq,
        p.lk,
        p.sm_scale,
        p.dropout_p,
        p.seed,
        p.block_m or 0,
        p.block_n or 0,
    )


def _problem(
    q: Tensor,
    q_bound: Tensor,
    k_bound: Tensor,
    cu_q: Tensor | None,
    cu_k: Tensor | None,
    q_valid: Tensor | None,
    k_valid: Tensor | None,
    varlen: bool,
    lq: int,
    lk: int,
    sm_scale: float,
    dropout_p: float,
    seed: int,
    block_m: int,
    block_n: int,
    **_tensors: Tensor,
) -> AttnProblem:
    """The ``AttnProblem`` of an op call, from the op's arguments by name (its other tensors ignored)."""
    return AttnProblem(
        varlen=varlen,
        batch=q_bound.shape[0],
        heads=q.shape[-2] if varlen else q.shape[1],
        lq=lq,
        lk=lk,
        head_dim=q.shape[-1],
        q_bound=q_bound,
        k_bound=k_bound,
        cu_q=cu_q,
        cu_k=cu_k,
        q_valid=q_valid,
        k_valid=k_valid,
        sm_scale=sm_scale,
        dropout_p=dropout_p,
        seed=seed,
        block_m=block_m or None,
        block_n=block_n or None,
    )


@torch.library.custom_op("maskmm::flash_attn_fwd", mutates_args=())
def attn_fwd_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_bound: Tensor,
    k_bound: Tensor,
    cu_q: Tensor | None,
    cu_k: Tensor | None,
    q_valid: Tensor | None,
    k_valid: Tensor | None,
    varlen: bool,
    lq: int,
    lk: int,
    sm_scale: float,
    dropout_p: float,
    seed: int,
    block_m: int,
    block_n: int,
) -> tuple[Tensor, Tensor]:
    """``(out, lse)``: see :func:`_launch.forward`."""
    return _launch.forward(q, k, v, _problem(**locals()))


@attn_fwd_op.register_fake
def _attn_fwd_fake(q, k, v, q_bound, k_bound, cu_q, cu_k, q_valid, k_valid, varlen, lq, lk, *_):
    heads = q.shape[-2] if varlen else q.shape[1]
    lse = q.new_empty((q_bound.shape[0] * heads, lq), dtype=torch.float32)
    return torch.empty_like(q), lse


@torch.library.custom_op("maskmm::flash_attn_bwd", mutates_args=())
def attn_bwd_op(
    grad_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    q_bound: Tensor,
    k_bound: Tensor,
    cu_q: Tensor | None,
    cu_k: Tensor | None,
    q_valid: Tensor | None,
    k_valid: Tensor | None,
    varlen: bool,
    lq: int,
    lk: int,
    sm_scale: float,
    dropout_p: float,
    seed: int,
    block_m: int,
    block_n: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(dq, dk, dv)``: see :func:`_launch.backward`."""
    return _launch.backward(grad_out, q, k, v, out, lse, _problem(**locals()))


@attn_bwd_op.register_fake
def _attn_bwd_fake(grad_out, q, k, v, *_):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
