"""Image-text contrastive loss (ALBEF style): global keys, queue, multi-positive and soft targets."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from maskmm._checks import (
    check_bool,
    check_floating,
    check_int,
    check_positive_float,
    check_ratio,
    check_same_device,
    check_same_dtype,
    check_tensor,
)
from maskmm.distributed import all_gather_no_grad, all_gather_with_grad, world_info
from maskmm.losses.positives import check_positives
from maskmm.losses.queue import FeatureQueue
from maskmm.losses.types import LossOutput, _acc_dtype, _stat

__all__ = ["ImageTextContrastive", "contrastive_targets", "image_text_contrastive_loss"]


def contrastive_targets(
    num_queries: int,
    num_keys: int,
    *,
    offset: int = 0,
    query_ids: Tensor | None = None,
    key_ids: Tensor | None = None,
    key_valid: Tensor | None = None,
    positives: Tensor | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Hard targets ``fp32 [num_queries, num_keys]``; each row sums to 1.

    Query ``i``'s own pair, key ``offset + i`` of the gathered batch, is always a positive.
    Without ids or ``positives`` it is the only one. With ids, every valid key sharing the query's
    id is a positive too (ids are ``>= 0``; a key id ``-1`` marks "no id" and never matches, so a
    query with id ``-1`` keeps its own pair only); ``positives`` (``bool [num_queries, K]``,
    ``K <= num_keys``) marks further positives among the first ``K`` keys. Rows are normalised.
    """
    rows = torch.arange(num_queries, device=device)
    own = torch.zeros(num_queries, num_keys, device=device, dtype=torch.bool)
    own[rows, rows + offset] = True
    if positives is not None:
        own[:, : positives.shape[1]] |= positives
    if query_ids is None:
        pos = own.to(dtype)
        return pos if positives is None else pos / pos.sum(1, keepdim=True)
    pos = (query_ids.unsqueeze(1) == key_ids.unsqueeze(0)) & (key_ids >= 0).unsqueeze(0)
    if key_valid is not None:
        pos = pos & key_valid.unsqueeze(0)
    pos = (pos | own).to(dtype)
    return pos / pos.sum(1, keepdim=True)


def _soft_ce(sim: Tensor, targets: Tensor, key_valid: Tensor | None) -> Tensor:
    """Per-row ``-sum_k targets * log_softmax(sim)`` over valid keys (``key_valid [K]`` or ``[b, K]``)."""
    if key_valid is None:
        return -(targets * F.log_softmax(sim, dim=1)).sum(1)
    logp = F.log_softmax(sim.masked_fill(~key_valid, float("-inf")), dim=1)
    return -torch.where(key_valid, targets * logp, logp.new_zeros(())).sum(1)


def _masked_softmax(sim: Tensor, key_valid: Tensor | None) -> Tensor:
    if key_valid is None:
        return torch.softmax(sim, dim=1)
    return torch.softmax(sim.masked_fill(~key_valid, float("-inf")), dim=1)


def image_text_contrastive_loss(
    image_feat: Tensor,
    text_feat: Tensor,
    temperature: Tensor | float,
    *,
    image_ids: Tensor | None = None,
    positives: Tensor | None = None,
    false_negatives: str = "positive",
    image_feat_m: Tensor | None = None,
    text_feat_m: Tensor | None = None,
    alpha: float = 0.0,
    image_queue: Tensor | None = None,
    text_queue: Tensor | None = None,
    id_queue: Tensor | None = None,
    queue_valid: Tensor | None = None,
    gather: bool = True,
    group: dist.ProcessGroup | None = None,
) -> LossOutput:
    """Symmetric InfoNCE between local image/text queries and global keys (+ queue).

    Keys: with momentum features (``image_feat_m``/``text_feat_m``, ALBEF) the keys are
    the momentum features of the *global* batch (gathered without gradient); without
    them (CLIP/MaskVLM style) the keys are the online features gathered **with**
    gradient (:func:`maskmm.distributed.all_gather_with_grad`, sum semantics). The
    queue (if given) is appended after the batch keys. On rank ``r`` with local batch
    ``b``, query ``i``'s own pair is key ``r * b + i``.

    Targets: one-hot on the own pair, or with ``image_ids`` every key sharing the id
    (batch and queue) is a positive, and with ``positives`` every batch key the mask marks (a caption
    true of the query image, an image the query caption is true of), normalised per row. With
    ``alpha > 0`` the targets become ``alpha * softmax(sim_m) + (1 - alpha) * targets`` where
    ``sim_m`` are the momentum features' similarities to the same keys (no gradient).

    ``loss = (CE_i2t + CE_t2i) / 2``, each the mean over the local rows (0 for an empty
    batch). Under DDP each rank's loss is its local mean; averaging gradients over ranks
    gives the gradient of the single-process loss on the concatenated batch.

    Args:
        image_feat, text_feat: ``[b, E]`` online features of one dtype, expected L2-normalised.
        temperature: positive scalar (float or 0-dim/1-element tensor, may require grad).
            Used as given (the module clamps its learnable temperature).
        image_ids: ``long [b]`` non-negative pair ids (same id = same image); the own pair is
            always a positive.
        positives: ``bool [N, N]`` over the gathered batch (``N = world * b``; ``b`` without
            ``gather``), the same on every rank: ``[i, j]`` = caption ``j`` is true of image ``i``
            (:func:`maskmm.losses.batch_positives`). Image query ``i`` reads row ``i``, text query
            ``j`` column ``j``; queue keys are matched by ``image_ids`` only.
        false_negatives: what the keys ``positives`` marks (other than the own pair) are:
            ``"positive"``: positives of the query (multi-positive targets); ``"exclude"``: left out
            of the query's softmax (neither a positive nor a negative; no gradient through them).
        image_feat_m, text_feat_m: ``[b, E]`` momentum features of one dtype (both or neither).
        alpha: soft-target weight in ``[0, 1]``; ``> 0`` needs momentum features.
        image_queue, text_queue: ``[Q, E]`` queued features (both or neither).
        id_queue: ``long [Q]`` ids of the queue entries (``-1`` = none); needed with
            ``image_ids`` and a queue.
        queue_valid: ``bool [Q]`` queue entries that hold data (others are ignored).
        gather: gather keys across ranks when distributed.
        group: process group for the gathers.

    Returns:
        ``LossOutput`` with stats ``i2t_acc``, ``t2i_acc`` (arg-max key is a positive)
        and ``temperature``.
    """
    check_floating("image_feat", image_feat, ndim=2)
    b, e = image_feat.shape
    check_floating("text_feat", text_feat, shape=(b, e))
    check_same_dtype(image_feat=image_feat, text_feat=text_feat)
    if (image_feat_m is None) != (text_feat_m is None):
        raise ValueError("image_feat_m and text_feat_m must be given together (or both None)")
    if image_feat_m is not None:
        check_floating("image_feat_m", image_feat_m, shape=(b, e))
        check_floating("text_feat_m", text_feat_m, shape=(b, e))
        check_same_dtype(image_feat_m=image_feat_m, text_feat_m=text_feat_m)
    alpha = check_ratio("alpha", alpha, allow_one=True)
    check_bool("gather", gather)
    if alpha > 0.0 and image_feat_m is None:
        raise ValueError(f"alpha={alpha} > 0 needs momentum features image_feat_m and text_feat_m")
    if image_ids is not None:
        check_tensor("image_ids", image_ids, shape=(b,), dtype=torch.long)
    rank, world = world_info(group) if gather else (0, 1)
    check_positives(positives, world * b, image_feat.device)
    if false_negatives not in ("positive", "exclude"):
        raise ValueError(f"false_negatives must be 'positive' or 'exclude', got {false_negatives!r}")
    exclude = positives is not None and false_negatives == "exclude"
    if (image_queue is None) != (text_queue is None):
        raise ValueError("image_queue and text_queue must be given together (or both None)")
    q = 0
    if image_queue is not None:
        check_floating("image_queue", image_queue, shape=(None, e))
        q = image_queue.shape[0]
        check_floating("text_queue", text_queue, shape=(q, e))
        if queue_valid is not None:
            check_tensor("queue_valid", queue_valid, shape=(q,), dtype=torch.bool)
        if image_ids is not None:
            if id_queue is None:
                raise ValueError("id_queue [Q] is required when image_ids and a queue are given")
            check_tensor("id_queue", id_queue, shape=(q,), dtype=torch.long)
    if isinstance(temperature, Tensor):
        check_floating("temperature", temperature)
        if temperature.numel() != 1:
            raise ValueError(f"temperature must be a scalar tensor, got shape {list(temperature.shape)}")
        temp = temperature.reshape(())
    elif isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature > 0:
        temp = image_feat.new_full((), float(temperature), dtype=_acc_dtype(image_feat))  # no H2D copy
    else:
        raise ValueError(f"temperature must be a positive float or a scalar tensor, got {temperature!r}")
    check_same_device(
        image_feat=image_feat,
        text_feat=text_feat,
        temperature=temp,
        image_ids=image_ids,
        image_feat_m=image_feat_m,
        text_feat_m=text_feat_m,
        image_queue=image_queue,
        text_queue=text_queue,
        id_queue=id_queue,
        queue_valid=queue_valid,
    )

    acc = _acc_dtype(image_feat, temperature if isinstance(temperature, Tensor) else None)
    temp = temp.to(acc)
    momentum = image_feat_m is not None
    if momentum:
        img_keys = all_gather_no_grad(image_feat_m, group) if gather else image_feat_m.detach()
        txt_keys = all_gather_no_grad(text_feat_m, group) if gather else text_feat_m.detach()
    else:
        img_keys = all_gather_with_grad(image_feat, group) if gather else image_feat
        txt_keys = all_gather_with_grad(text_feat, group) if gather else text_feat
    n_batch = img_keys.shape[0]
    img_keys = img_keys.to(acc)
    txt_keys = txt_keys.to(acc)
    key_valid = None
    if q:
        img_keys = torch.cat([img_keys, image_queue.detach().to(acc)])
        txt_keys = torch.cat([txt_keys, text_queue.detach().to(acc)])
        if queue_valid is not None:
            key_valid = torch.cat([queue_valid.new_ones(n_batch), queue_valid])

    with torch.no_grad():
        key_ids = None
        if image_ids is not None:
            key_ids = all_gather_no_grad(image_ids, group) if gather else image_ids
            if q:
                key_ids = torch.cat([key_ids, id_queue])
        local = slice(rank * b, (rank + 1) * b)
        row_pos = (None, None) if positives is None else (positives[local], positives[:, local].t())
        hard_i2t, hard_t2i = (
            contrastive_targets(
                b,
                n_batch + q,
                offset=rank * b,
                query_ids=image_ids,
                key_ids=key_ids,
                key_valid=key_valid,
                positives=None if exclude else p,
                device=image_feat.device,
                dtype=acc,
            )
            for p in row_pos
        )
        kv_i2t = kv_t2i = key_valid
        if exclude:  # per-row key validity: marked keys that are not positives leave the softmax
            kv_i2t, kv_t2i = (
                ~(F.pad(p, (0, q)) & (h == 0)) & (True if key_valid is None else key_valid)
                for p, h in zip(row_pos, (hard_i2t, hard_t2i))
            )
        t_i2t, t_t2i = hard_i2t, hard_t2i
        if alpha > 0.0:
            t_det = temp.detach()
            sim_i2t_m = image_feat_m.to(acc) @ txt_keys.t() / t_det
            sim_t2i_m = text_feat_m.to(acc) @ img_keys.t() / t_det
            t_i2t = alpha * _masked_softmax(sim_i2t_m, kv_i2t) + (1.0 - alpha) * hard_i2t
            t_t2i = alpha * _masked_softmax(sim_t2i_m, kv_t2i) + (1.0 - alpha) * hard_t2i

    sim_i2t = image_feat.to(acc) @ txt_keys.t() / temp
    sim_t2i = text_feat.to(acc) @ img_keys.t() / temp
    denom = float(max(b, 1))
    loss_i2t = _soft_ce(sim_i2t, t_i2t, kv_i2t).sum() / denom
    loss_t2i = _soft_ce(sim_t2i, t_t2i, kv_t2i).sum() / denom
    loss = 0.5 * (loss_i2t + loss_t2i)

    with torch.no_grad():
        if b > 0:
            m_i2t = sim_i2t if kv_i2t is None else sim_i2t.masked_fill(~kv_i2t, float("-inf"))
            m_t2i = sim_t2i if kv_t2i is None else sim_t2i.masked_fill(~kv_t2i, float("-inf"))
            acc_i2t = (hard_i2t.gather(1, m_i2t.argmax(1, keepdim=True)) > 0).float().mean()
            acc_t2i = (hard_t2i.gather(1, m_t2i.argmax(1, keepdim=True)) > 0).float().mean()
        else:
            acc_i2t = acc_t2i = loss.new_zeros(())
        stats = {
            "i2t_acc": _stat(acc_i2t),
            "t2i_acc": _stat(acc_t2i),
            "loss_i2t": _stat(loss_i2t),
            "loss_t2i": _stat(loss_t2i),
            "temperature": _stat(temp),
        }
    return LossOutput(loss, stats)


class ImageTextContrastive(nn.Module):
    """ITC with a learnable temperature and an optional :class:`FeatureQueue`.

    Args:
        embed_dim: feature size ``E``.
        queue_size: queue length ``Q`` (0 = in-batch keys only). The queue holds
            *global* (gathered) momentum features, identical on every rank.
        temperature: initial temperature (ALBEF: 0.07).
        temperature_bounds: the temperature is clamped in place to this range at the
            start of every forward (ALBEF: ``[0.001, 0.5]``).
        learnable_temperature: a parameter (``True``) or a fixed buffer.
        false_negatives: ``"positive"`` or ``"exclude"``: what the keys a ``positives`` mask marks
            are (see :func:`image_text_contrastive_loss`).
        normalize: L2-normalise all features inside the loss.
        gather: gather keys across ranks when distributed.

    ``forward(image_feat, text_feat, *, image_feat_m=None, text_feat_m=None,
    image_ids=None, positives=None, alpha=0.0, update_queue=None)`` computes
    :func:`image_text_contrastive_loss` against the batch and queue, then (when
    ``update_queue``, default ``self.training``) enqueues the gathered momentum
    features (or the detached online features without momentum) and ids.
    """

    def __init__(
        self,
        embed_dim: int,
        queue_size: int = 0,
        temperature: float = 0.07,
        *,
        temperature_bounds: tuple[float, float] = (0.001, 0.5),
        learnable_temperature: bool = True,
        false_negatives: str = "positive",
        normalize: bool = True,
        gather: bool = True,
    ) -> None:
        super().__init__()
        self.embed_dim = check_int("embed_dim", embed_dim, minimum=1)
        check_int("queue_size", queue_size)
        if not isinstance(temperature_bounds, (tuple, list)) or len(temperature_bounds) != 2:
            raise TypeError(f"temperature_bounds must be a pair (low, high), got {temperature_bounds!r}")
        lo = check_positive_float("temperature_bounds[0]", temperature_bounds[0])
        hi = check_positive_float("temperature_bounds[1]", temperature_bounds[1])
        if lo > hi:
            raise ValueError(f"temperature_bounds must satisfy 0 < low <= high, got {temperature_bounds}")
        temperature = check_positive_float("temperature", temperature)
        if not (lo <= temperature <= hi):
            raise ValueError(f"temperature must lie in {temperature_bounds}, got {temperature}")
        check_bool("learnable_temperature", learnable_temperature)
        if false_negatives not in ("positive", "exclude"):
            raise ValueError(f"false_negatives must be 'positive' or 'exclude', got {false_negatives!r}")
        self.false_negatives = false_negatives
        self.temperature_bounds = (lo, hi)
        self.normalize = check_bool("normalize", normalize)
        self.gather = check_bool("gather", gather)
        t = torch.tensor(temperature)
        if learnable_temperature:
            self.temp = nn.Parameter(t)
        else:
            self.register_buffer("temp", t)
        self.queue = FeatureQueue(embed_dim, queue_size) if queue_size > 0 else None

    def forward(
        self,
        image_feat: Tensor,
        text_feat: Tensor,
        *,
        image_feat_m: Tensor | None = None,
        text_feat_m: Tensor | None = None,
        image_ids: Tensor | None = None,
        positives: Tensor | None = None,
        alpha: float = 0.0,
        update_queue: bool | None = None,
    ) -> LossOutput:
        with torch.no_grad():
            self.temp.clamp_(*self.temperature_bounds)
        if self.normalize:
            image_feat = F.normalize(image_feat, dim=-1)
            text_feat = F.normalize(text_feat, dim=-1)
            if image_feat_m is not None:
                image_feat_m = F.normalize(image_feat_m, dim=-1)
            if text_feat_m is not None:
                text_feat_m = F.normalize(text_feat_m, dim=-1)
        qu = self.queue
        out = image_text_contrastive_loss(
            image_feat,
            text_feat,
            self.temp,
            image_ids=image_ids,
            positives=positives,
            false_negatives=self.false_negatives,
            image_feat_m=image_feat_m,
            text_feat_m=text_feat_m,
            alpha=alpha,
            image_queue=qu.image if qu is not None else None,
            text_queue=qu.text if qu is not None else None,
            id_queue=qu.ids if qu is not None else None,
            queue_valid=qu.valid if qu is not None else None,
            gather=self.gather,
        )
        if update_queue is None:
            update_queue = self.training
        if update_queue and qu is not None:
            with torch.no_grad():
                src_i = image_feat_m if image_feat_m is not None else image_feat
                src_t = text_feat_m if text_feat_m is not None else text_feat
                gather = all_gather_no_grad if self.gather else (lambda x: x.detach())
                ids = gather(image_ids) if image_ids is not None else None
                qu.enqueue(gather(src_i), gather(src_t), ids)
        return out

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, temperature_bounds={self.temperature_bounds}, "
            f"false_negatives={self.false_negatives!r}"
        )
