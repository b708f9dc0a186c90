"""Evaluation of any recipe's model on the built-in data (the model follows
:class:`maskmm.training.Objective`: ``encode_image``, ``encode_text``, ``itm_logits``, ``has_itc``,
``has_itm``).

- Zero-shot retrieval, both directions, R@1/5/10: ITC similarities, then ITM re-ranking of the
  top-k candidates (as ALBEF). Relevance is fact-based (a caption is relevant to every image it
  is true of); the strict one-caption-per-image numbers are reported too (``strict_*``).
- Fine-grained: score of the true caption vs captions that change exactly one attribute (colour,
  shape, size, position, relation); per-attribute accuracy. The score is the ITM match probability
  (default) or the cosine similarity of the ITC features (``scorer="itc"``, the dual-encoder score).
- Grounding: Grad-CAM of the ITM match logit w.r.t. the image tokens entering the fusion, for
  each object's noun phrase; pointing-game and energy-in-box scores.

Run: ``maskmm-eval --checkpoint runs/mamo-tiny``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from maskmm._host import to_python
from maskmm.data import build_fine_grained_set

from .builtin import EvalSet, eval_dataset, retrieval_set
from .files import load_finegrained_file, load_retrieval_file
from .finegrained import distractor_accuracy
from .grounding import box_patch_mask, grad_cam, grounding_scores
from .rerank import itm_itc_score, rerank_topk
from .retrieval import retrieval_recall

__all__ = [
    "encode_images",
    "encode_texts",
    "evaluate",
    "evaluate_finegrained",
    "evaluate_grounding",
    "evaluate_retrieval",
    "format_table",
    "itm_match_prob",
]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_images(model: nn.Module, images: Tensor, batch_size: int = 128) -> tuple[Tensor, Tensor]:
    """Image states ``[N, 1+P, D]`` and normalised ITC features ``[N, E]`` (batched)."""
    dev = _device(model)
    states, feats = [], []
    for i in range(0, images.shape[0], batch_size):
        s, f = model.encode_image(images[i : i + batch_size].to(dev))
        states.append(s)
        feats.append(torch.nn.functional.normalize(f.float(), dim=-1))
    return torch.cat(states), torch.cat(feats)


@torch.no_grad()
def encode_texts(
    model: nn.Module, tokenizer: Any, captions: list[str], max_len: int, batch_size: int = 256
) -> tuple[Tensor, Tensor, Tensor]:
    """Text states ``[N, L, D]``, validity ``bool [N, L]`` and normalised ITC features ``[N, E]``."""
    dev = _device(model)
    tok = tokenizer(captions, max_len, padding="max_length")
    states, feats = [], []
    for i in range(0, len(captions), batch_size):
        ids = tok.input_ids[i : i + batch_size].to(dev)
        valid = tok.valid[i : i + batch_size].to(dev)
        s, f = model.encode_text(ids, valid)
        states.append(s)
        feats.append(torch.nn.functional.normalize(f.float(), dim=-1))
    return torch.cat(states), tok.valid.to(dev), torch.cat(feats)


@torch.no_grad()
def itm_match_prob(model: nn.Module, img_states: Tensor, txt_states: Tensor, txt_valid: Tensor) -> Tensor:
    """``fp32 [M]`` probability that row ``m``'s image and text match."""
    return model.itm_logits(img_states, txt_states, txt_valid).float().softmax(-1)[:, 1]


@torch.no_grad()
def evaluate_retrieval(
    model: nn.Module,
    tokenizer: Any,
    cfg: Any,
    split: str,
    n: int | None = None,
    *,
    itm: bool | None = None,
    rerank_k: int | None = None,
    data: EvalSet | None = None,
) -> dict[str, float]:
    """R@1/5/10 (``tr_*``: image -> text, ``ir_*``: text -> image) with ``n`` candidates each way.

    ``data``: the images and captions to score (e.g. :func:`~maskmm.evaluation.files.load_retrieval_file`);
    default: the first ``n`` items of the built-in ``split``.
    """
    itm = cfg.eval.itm if itm is None else itm
    k = cfg.eval.rerank_k if rerank_k is None else rerank_k
    was_training = model.training
    model.eval()
    if data is None:
        data = retrieval_set(cfg, split, cfg.eval.num_candidates if n is None else n)
    n = data.images.shape[0]
    bs = cfg.eval.batch_size
    img_states, img_feat = encode_images(model, data.images, bs)
    txt_states, txt_valid, txt_feat = encode_texts(model, tokenizer, data.captions, cfg.data.max_text_len, bs)
    sim = img_feat @ txt_feat.t()  # [N images, N texts]
    dev = sim.device
    pos = data.positives.to(dev)
    out: dict[str, float] = {}
    for name, value in retrieval_recall(sim, positives=pos).items():
        out[f"itc_{name}"] = value
    ids, tids = data.image_ids.to(dev), data.text_image_ids.to(dev)
    for name, value in retrieval_recall(sim, ids, tids).items():
        out[f"strict_itc_{name}"] = value
    if itm and model.has_itm and k > 0:
        w = cfg.eval.rerank_itc_weight

        def i2t(qi: Tensor, ci: Tensor) -> Tensor:
            logits = model.itm_logits(img_states[qi], txt_states[ci], txt_valid[ci])
            return itm_itc_score(logits, sim[qi, ci], w)

        def t2i(qi: Tensor, ci: Tensor) -> Tensor:
            logits = model.itm_logits(img_states[ci], txt_states[qi], txt_valid[qi])
            return itm_itc_score(logits, sim[ci, qi], w)

        tr = rerank_topk(sim, k, i2t, chunk_size=bs)
        ir = rerank_topk(sim.t().contiguous(), k, t2i, chunk_size=bs)
        r_tr = retrieval_recall(tr, positives=pos)
        r_ir = retrieval_recall(ir.t().contiguous(), positives=pos)
        for kk in (1, 5, 10):
            out[f"itm_tr_r{kk}"] = r_tr[f"tr_r{kk}"]
            out[f"itm_ir_r{kk}"] = r_ir[f"ir_r{kk}"]
        s_tr = retrieval_recall(tr, ids, tids)
        s_ir = retrieval_recall(ir.t().contiguous(), ids, tids)
        out["strict_itm_tr_r1"] = s_tr["tr_r1"]
        out["strict_itm_ir_r1"] = s_ir["ir_r1"]
    model.train(was_training)
    out["candidates"] = float(n)
    return {k_: float(v) for k_, v in to_python(out).items()}


_SCORERS = ("itm", "itc")


def _check_scorer(model: nn.Module, scorer: str) -> None:
    """Raise ``ValueError`` for an unknown ``scorer`` or one the model has no head for."""
    if scorer not in _SCORERS:
        raise ValueError(f"scorer must be one of {list(_SCORERS)}, got {scorer!r}")
    if scorer == "itm" and not model.has_itm:
        raise ValueError("scorer='itm' needs the ITM head; this model was built without it")
    if scorer == "itc" and not model.has_itc:
        raise ValueError("scorer='itc' needs the ITC projections; this model was built without them")


@torch.no_grad()
def evaluate_finegrained(
    model: nn.Module,
    tokenizer: Any,
    cfg: Any,
    split: str,
    n: int | None = None,
    *,
    scorer: str = "itm",
) -> dict[str, float]:
    """Per-attribute accuracy (%) of preferring the true caption over a one-attribute distractor.

    Uses :func:`maskmm.data.build_fine_grained_set` (one distractor per image and attribute,
    missing where the caption states no such attribute).

    Args:
        n: images (default ``eval.finegrained_samples``); 0 returns ``{}``.
        scorer: ``"itm"``: the ITM match probability of the fused pair (needs the ITM head);
            ``"itc"``: the cosine similarity of the pair's ITC features, the dual-encoder score
            (needs the ITC projections).
    Returns:
        attribute -> accuracy in percent (NaN for an attribute without samples), and ``"mean"``.
    Raises:
        ValueError: an unknown ``scorer``, or a model without the head ``scorer`` needs.
    """
    _check_scorer(model, scorer)
    n = cfg.eval.finegrained_samples if n is None else n
    if n == 0:
        return {}
    fg = build_fine_grained_set(eval_dataset(cfg, split, n), n, seed=cfg.data.seed)
    distractors = {a: [[c] if c is not None else [] for c in caps] for a, caps in fg.distractors.items()}
    return score_distractors(model, tokenizer, cfg, fg.images, fg.captions, distractors, scorer=scorer)


@torch.no_grad()
def score_distractors(
    model: nn.Module,
    tokenizer: Any,
    cfg: Any,
    images: Tensor,
    captions: list[str],
    distractors: dict[str, list[list[str]]],
    *,
    scorer: str = "itm",
) -> dict[str, float]:
    """Per-attribute accuracy (%) of scoring ``captions[i]`` above each of ``distractors[a][i]`` for
    ``images [N, 3, H, W]`` (an image without distractors for ``a`` does not count for ``a``).

    Returns attribute -> accuracy (NaN for an attribute without samples) and ``"mean"``."""
    _check_scorer(model, scorer)
    was_training = model.training
    model.eval()
    n = images.shape[0]
    img_states, img_feat = encode_images(model, images, cfg.eval.batch_size)  # [n, 1+P, D], [n, E]
    ml = cfg.data.max_text_len
    dev = img_states.device

    def match(rows: Tensor, texts: list[str]) -> Tensor:
        """``fp32 [M]`` score of image ``rows[m]`` with ``texts[m]``."""
        t_states, t_valid, t_feat = encode_texts(model, tokenizer, texts, ml)
        if scorer == "itc":
            return (img_feat[rows] * t_feat).sum(-1)  # both unit-norm: cosine similarity
        parts = []
        for i in range(0, len(texts), 256):
            sl = slice(i, i + 256)
            parts.append(itm_match_prob(model, img_states[rows[sl]], t_states[sl], t_valid[sl]))
        return torch.cat(parts)

    true_scores = match(torch.arange(n, device=dev), captions)
    scores: dict[str, Tensor] = {}
    valid: dict[str, Tensor] = {}
    for attr, per_image in distractors.items():
        width = max((len(c) for c in per_image), default=0) or 1
        sc = torch.full((n, width), float("-inf"), device=dev)
        va = torch.zeros(n, width, dtype=torch.bool, device=dev)
        pairs = [(i, j, c) for i, caps in enumerate(per_image) for j, c in enumerate(caps)]
        if pairs:
            rows = torch.tensor([i for i, _, _ in pairs], device=dev)
            cols = torch.tensor([j for _, j, _ in pairs], device=dev)
            sc[rows, cols] = match(rows, [c for _, _, c in pairs])
            va[rows, cols] = True
        scores[attr], valid[attr] = sc, va
    res = distractor_accuracy(true_scores, scores, valid)
    model.train(was_training)
    return {k: float(v) for k, v in to_python(res).items() if not k.endswith("_count")}


def evaluate_grounding(
    model: nn.Module, tokenizer: Any, cfg: Any, split: str, n: int | None = None
) -> dict[str, float]:
    """Grad-CAM pointing game / energy (%) of each object's noun phrase against its box."""
    n = cfg.eval.grounding_samples if n is None else n
    if n == 0 or not model.has_itm:
        return {}
    was_training = model.training
    model.eval()
    data = retrieval_set(cfg, split, n)
    img_states, _ = encode_images(model, data.images, cfg.eval.batch_size)
    rows, phrases, boxes = [], [], []
    for i, scene in enumerate(data.scenes):
        words = scene.caption.split()
        for (start, end), box in zip(scene.phrase_spans().tolist(), scene.boxes().tolist()):
            rows.append(i)
            phrases.append(" ".join(words[start:end]))
            boxes.append(box)
    if not rows:
        return {}
    t_states, t_valid, _ = encode_texts(model, tokenizer, phrases, cfg.data.max_text_len)
    r = torch.tensor(rows, device=img_states.device)
    cams = []
    for i in range(0, len(rows), 128):
        v = img_states[r[i : i + 128]].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logit = model.itm_logits(v, t_states[i : i + 128], t_valid[i : i + 128])[:, 1].sum()
            (grad,) = torch.autograd.grad(logit, v)
        cams.append(grad_cam(v[:, 1:].detach(), grad[:, 1:]))
    cam = torch.cat(cams)
    side = math.isqrt(cam.shape[1])  # square patch grid of the image states (CLS excluded)
    s = cfg.data.image_size
    mask = box_patch_mask(torch.tensor(boxes, device=cam.device), (side, side), (s, s))
    res = grounding_scores(cam, mask)
    model.train(was_training)
    return {k: float(v) for k, v in to_python(res).items()}


def evaluate(
    model: nn.Module,
    tokenizer: Any,
    cfg: Any,
    splits: list[str] | None = None,
    *,
    test_files: list[str] | None = None,
    finegrained_files: list[str] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Every evaluation on every split and file.

    Built-in ``splits`` (default ``eval.splits``) are scored when asked for explicitly or when the run
    trained on the built-in data (``data.kind: shapes``); the user's ``test_files`` /
    ``finegrained_files`` (default ``eval.*``) always. A run trained on other data with no test file
    and no explicit split raises ``ValueError``: scoring the built-in data would say nothing about it.

    Returns ``{name: {"retrieval": ..., "finegrained": ..., "finegrained_itc": ..., "grounding": ...}}``
    (``name``: a split, or ``file:<path>``; fine-grained accuracies scored by ITM and by ITC; ``{}``
    where the model lacks the head or the data the metadata).
    """
    files = list(cfg.eval.test_files if test_files is None else test_files)
    fg_files = list(cfg.eval.finegrained_files if finegrained_files is None else finegrained_files)
    if splits is None:
        if cfg.data.kind != "shapes" and not (files or fg_files):
            raise ValueError(
                f"this run trained on data.kind={cfg.data.kind!r}: give its test sets (eval.test_files or "
                "maskmm-eval --test-file); pass --splits to score the built-in data anyway"
            )
        splits = list(cfg.eval.splits) if cfg.data.kind == "shapes" else []
    out: dict[str, dict[str, dict[str, float]]] = {}
    for split in splits:
        out[split] = {
            "retrieval": evaluate_retrieval(model, tokenizer, cfg, split),
            "finegrained": (evaluate_finegrained(model, tokenizer, cfg, split) if model.has_itm else {}),
            "finegrained_itc": (
                evaluate_finegrained(model, tokenizer, cfg, split, scorer="itc") if model.has_itc else {}
            ),
            "grounding": evaluate_grounding(model, tokenizer, cfg, split),
        }
    root = cfg.eval.image_root or cfg.data.image_root
    size, norm = cfg.data.image_size, cfg.data.normalize
    for path in files:
        data = load_retrieval_file(path, root, image_size=size, normalize=norm)
        out[f"file:{path}"] = {"retrieval": evaluate_retrieval(model, tokenizer, cfg, str(path), data=data)}
    for path in fg_files:
        fg = load_finegrained_file(path, root, image_size=size, normalize=norm)
        entry = out.setdefault(f"file:{path}", {})
        for key, scorer, ok in (
            ("finegrained", "itm", model.has_itm),
            ("finegrained_itc", "itc", model.has_itc),
        ):
            if ok:
                entry[key] = score_distractors(
                    model, tokenizer, cfg, fg.images, fg.captions, fg.distractors, scorer=scorer
                )
    return out


def format_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """A plain-text table of :func:`evaluate`'s results."""
    lines = []
    for split, parts in results.items():
        r = parts.get("retrieval", {})
        n = int(r.get("candidates", 0))
        lines.append(f"== {split} ({n} candidates) ==" if n else f"== {split} ==")
        lines.append(f"{'retrieval':<22}{'TR@1':>8}{'TR@5':>8}{'TR@10':>8}{'IR@1':>8}{'IR@5':>8}{'IR@10':>8}")
        for tag, name in (("itc", "ITC"), ("itm", "ITM re-rank")):
            if f"{tag}_tr_r1" in r:
                vals = [r[f"{tag}_tr_r{k}"] for k in (1, 5, 10)] + [r[f"{tag}_ir_r{k}"] for k in (1, 5, 10)]
                lines.append(f"{name:<22}" + "".join(f"{v:8.1f}" for v in vals))
        if "strict_itc_tr_r1" in r:
            strict = (
                f"strict (own caption only) ITC TR@1 {r['strict_itc_tr_r1']:.1f} "
                f"IR@1 {r['strict_itc_ir_r1']:.1f}"
            )
            if "strict_itm_tr_r1" in r:
                strict += f"; ITM TR@1 {r['strict_itm_tr_r1']:.1f} IR@1 {r['strict_itm_ir_r1']:.1f}"
            lines.append(strict)
        for key, name in (("finegrained", "ITM"), ("finegrained_itc", "ITC")):
            fg = parts.get(key, {})
            if fg:
                lines.append(f"fine-grained {name} acc  " + "  ".join(f"{k} {v:.1f}" for k, v in fg.items()))
        gr = parts.get("grounding", {})
        if gr:
            lines.append("grounding (Grad-CAM)  " + "  ".join(f"{k} {v:.1f}" for k, v in gr.items()))
    return "\n".join(lines)
