"""Masked-token ("concept") prediction loss: the vocabulary head runs on masked rows only."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskmm._checks import (
    check_bool,
    check_class_indices,
    check_floating,
    check_int,
    check_ratio,
    check_same_device,
    check_tensor,
)
from maskmm.losses.linear_cross_entropy import fused_linear_cross_entropy
from maskmm.losses.types import LossOutput, _acc_dtype, _stat

__all__ = ["MaskedTokenLoss", "masked_token_loss"]


def _check_labels(selected: Tensor, vocab: int, source: str, ignore_index: int) -> None:
    """``selected``: the labels at scored positions (``!= ignore_index``); one host read."""
    allowed = f" (V = {vocab}, the {source}) or equal ignore_index = {ignore_index}"
    check_class_indices("labels", selected, vocab, allowed=allowed)


def masked_token_loss(
    hidden: Tensor,
    labels: Tensor,
    head: Callable[[Tensor], Tensor] | Tensor,
    *,
    bias: Tensor | None = None,
    soft_targets: Tensor | None = None,
    soft_targets_are_logits: bool = False,
    alpha: float = 0.0,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    chunk_size: int | None = None,
) -> LossOutput:
    """Cross-entropy of the masked tokens, with optional soft-label distillation.

    The rows where ``labels != ignore_index`` are gathered first (``[M, D]``) and the
    head runs on them only. ``loss = (1 - alpha) * CE(hard, label_smoothing) +
    alpha * CE(soft)``, averaged over the ``M`` masked rows (ALBEF's MLM distillation).

    Args:
        hidden: ``[B, L, D]`` states.
        labels: ``long [B, L]``: target id in ``[0, V)`` at masked positions, ``ignore_index``
            elsewhere; any other value raises ``ValueError``.
        head: a callable ``[M, D] -> [M, V]`` (e.g. a prediction head), **or** a weight
            tensor ``[V, D]`` (then ``bias`` ``[V]`` may be given): the fused path
            (:func:`~maskmm.losses.fused_linear_cross_entropy`) computes linear +
            cross-entropy in row chunks without materialising ``[M, V]`` logits.
        soft_targets: teacher distribution, ``[B, L, V]`` (rows are picked with the same
            mask) or ``[M, V]`` (already gathered, row-major order of masked positions);
            probabilities, or logits with ``soft_targets_are_logits=True`` (softmax in fp32).
            Treated as constants. Required when ``alpha > 0``.
        alpha: distillation weight in ``[0, 1]``.
        label_smoothing: in ``[0, 1)``, applied to the hard term (as ``F.cross_entropy``).
        ignore_index: label value of unscored positions.
        chunk_size: rows per chunk for the fused path.

    Returns:
        ``LossOutput``; no masked position gives loss ``0`` (graph-connected, zero grads).
        Stats: ``accuracy`` (arg-max = label, over masked rows), ``num_masked``.

    Raises:
        TypeError / ValueError naming the argument, e.g. ``labels`` holding a value that is
        neither ``ignore_index`` nor a class id in ``[0, V)``.

    Note:
        Selecting the masked rows has a data-dependent size, so on CUDA it waits for
        the mask count (one host synchronisation); that is the price of running the
        head on masked rows only. Checking the selected labels against ``V`` reads their
        minimum and maximum (one more small host read, made once ``V`` is known: before
        the fused path, after a callable head; skipped while ``torch.compile`` traces).
    """
    check_floating("hidden", hidden, ndim=3)
    b, seq, d = hidden.shape
    check_tensor("labels", labels, shape=(b, seq), dtype=torch.long)
    fused = isinstance(head, Tensor)
    if fused:
        check_floating("head", head, shape=(None, d), dtype=hidden.dtype)
        if bias is not None:
            check_floating("bias", bias, shape=(head.shape[0],), dtype=hidden.dtype)
    elif not callable(head):
        raise TypeError(f"head must be a callable or a weight tensor [V, D], got {type(head).__name__}")
    elif bias is not None:
        raise ValueError("bias is only used with a weight tensor as head; the callable owns its bias")
    alpha = check_ratio("alpha", alpha, allow_one=True)
    label_smoothing = check_ratio("label_smoothing", label_smoothing)
    check_int("ignore_index", ignore_index, minimum=-(2**63))
    check_bool("soft_targets_are_logits", soft_targets_are_logits)
    if chunk_size is not None:
        check_int("chunk_size", chunk_size, minimum=1)
    if alpha > 0.0 and soft_targets is None:
        raise ValueError(f"soft_targets are required when alpha > 0, got alpha={alpha}")
    if soft_targets is not None:
        check_floating("soft_targets", soft_targets)
        if soft_targets.dim() == 3 and tuple(soft_targets.shape[:2]) != (b, seq):
            raise ValueError(
                f"soft_targets must have shape [{b}, {seq}, V] or [M, V], got {list(soft_targets.shape)}"
            )
        if soft_targets.dim() not in (2, 3):
            raise ValueError(
                f"soft_targets must have shape [B, L, V] or [M, V], got {list(soft_targets.shape)}"
            )
    check_same_device(hidden=hidden, labels=labels, soft_targets=soft_targets)

    acc = _acc_dtype(hidden)
    sel = labels != ignore_index
    count = sel.sum().to(torch.float32)
    rows = sel.reshape(-1).nonzero().squeeze(1)  # the one host synchronisation (data-dependent size)
    x = hidden.reshape(b * seq, d).index_select(0, rows)
    y = labels.reshape(-1).index_select(0, rows)
    m = x.shape[0]
    q = None
    if soft_targets is not None and alpha > 0.0:
        q = soft_targets.detach()
        if q.dim() == 3:
            q = q.reshape(b * seq, -1).index_select(0, rows)
        if q.shape[0] != m:
            raise ValueError(f"soft_targets must have {m} rows (one per masked position), got {q.shape[0]}")
        q = torch.softmax(q.to(acc), dim=-1) if soft_targets_are_logits else q.to(acc)

    if fused:
        if q is not None and q.shape[1] != head.shape[0]:
            raise ValueError(f"soft_targets must have V={head.shape[0]} columns, got {q.shape[1]}")
        _check_labels(y, head.shape[0], "rows of head", ignore_index)
        total, correct = fused_linear_cross_entropy(
            x,
            head,
            y,
            bias,
            soft_targets=q,
            alpha=alpha,
            label_smoothing=label_smoothing,
            chunk_size=chunk_size,
            check_values=False,  # checked just above, under the name of this function's argument
        )
    else:
        logits = head(x).to(acc)
        if logits.dim() != 2 or logits.shape[0] != m:
            raise ValueError(f"head must map [M, D] to [M, V] (M={m}), got {list(logits.shape)}")
        _check_labels(y, logits.shape[1], "columns of the head's output", ignore_index)
        total = (1.0 - alpha) * F.cross_entropy(logits, y, reduction="sum", label_smoothing=label_smoothing)
        if q is not None:
            if q.shape[1] != logits.shape[1]:
                raise ValueError(f"soft_targets must have V={logits.shape[1]} columns, got {q.shape[1]}")
            total = total + alpha * -(q * F.log_softmax(logits, dim=-1)).sum()
        with torch.no_grad():
            correct = (logits.argmax(-1) == y).sum().float()
    denom = count.clamp(min=1.0)
    loss = total / denom
    stats = {"accuracy": _stat(correct / denom), "num_masked": count}
    return LossOutput(loss, stats)


class MaskedTokenLoss(nn.Module):
    """Module form of :func:`masked_token_loss`.

    Args:
        head: optional default head (a module ``[M, D] -> [M, V]``). With ``fused=True``
            it must be an ``nn.Linear`` and its weight/bias go through the chunked path.
        fused: use the chunked linear + cross-entropy path.
        label_smoothing, chunk_size, ignore_index: as in :func:`masked_token_loss`.
    """

    def __init__(
        self,
        head: nn.Module | None = None,
        *,
        fused: bool = False,
        label_smoothing: float = 0.0,
        chunk_size: int | None = None,
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        check_bool("fused", fused)
        if fused and head is not None and not isinstance(head, nn.Linear):
            raise TypeError(f"fused=True needs head to be an nn.Linear, got {type(head).__name__}")
        if head is not None and not callable(head):
            raise TypeError(f"head must be a module [M, D] -> [M, V] or None, got {type(head).__name__}")
        self.head = head
        self.fused = fused
        self.label_smoothing = check_ratio("label_smoothing", label_smoothing)
        self.chunk_size = None if chunk_size is None else check_int("chunk_size", chunk_size, minimum=1)
        self.ignore_index = check_int("ignore_index", ignore_index, minimum=-(2**63))

    def forward(
        self,
        hidden: Tensor,
        labels: Tensor,
        head: nn.Module | None = None,
        *,
        soft_targets: Tensor | None = None,
        soft_targets_are_logits: bool = False,
        alpha: float = 0.0,
    ) -> LossOutput:
        head = head if head is not None else self.head
        if head is None:
            raise ValueError("head must be given (no default head was set at construction)")
        bias = None
        if self.fused:
            if not isinstance(head, nn.Linear):
                raise TypeError(f"fused=True needs head to be an nn.Linear, got {type(head).__name__}")
            head, bias = head.weight, head.bias
        return masked_token_loss(
            hidden,
            labels,
            head,
            bias=bias,
            soft_targets=soft_targets,
            soft_targets_are_logits=soft_targets_are_logits,
            alpha=alpha,
            label_smoothing=self.label_smoothing,
            ignore_index=self.ignore_index,
            chunk_size=self.chunk_size,
        )
