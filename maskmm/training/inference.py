"""Inference API for any recipe: load a trained run, encode images/texts, score and rank pairs.

Example::

    from maskmm.training import Inference

    m = Inference.load("runs/mamo-tiny")                 # run folder, model.pt or step_N.pt
    img = m.encode_images(images)                        # images float [N, 3, H, W]
    txt = m.encode_texts(["a red circle", "a blue star"])
    sims = m.itc_scores(img, txt)                        # [N, T] cosine similarities
    probs = m.itm_scores(img, txt)                       # [N] match probability of paired rows
    order, scores = m.rank(images[0], candidates)        # ITC top-k re-ranked by ITM
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from maskmm._checks import check_floating
from maskmm.evaluation.rerank import itm_itc_score, rerank_topk
from maskmm.evaluation.run import encode_images, encode_texts, itm_match_prob

from .checkpoint import latest_checkpoint, load_checkpoint
from .config import RunConfig
from .data import build_tokenizer, image_transform
from .recipe import Recipe, TokenizerIds, get_recipe

__all__ = ["Encoded", "Inference", "load_run", "resolve_checkpoint"]


class Encoded(NamedTuple):
    """Encoded images or texts: ``states [N, L, D]``, ``valid bool [N, L]`` (``None`` for images)
    and L2-normalised ITC features ``feat [N, E]``."""

    states: Tensor
    valid: Tensor | None
    feat: Tensor


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder's ``model.pt`` (else its newest ``step_N.pt``)."""
    p = Path(path)
    if p.is_dir():
        if (p / "model.pt").is_file():
            return p / "model.pt"
        found = latest_checkpoint(p)
        if found is None:
            raise ValueError(f"no model.pt or step_<N>.pt in {str(p)!r}")
        return found
    if not p.is_file():
        raise ValueError(f"checkpoint {str(p)!r} does not exist")
    return p


def load_run(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", overrides: list[str] | None = None
) -> tuple[Recipe, Any, nn.Module, Any]:
    """``(recipe, cfg, model, tokenizer)`` of a run folder (``model.pt`` or the newest
    ``step_N.pt``) or a checkpoint file; ``overrides`` change the stored config (e.g. ``eval.*``)."""
    file = resolve_checkpoint(path)
    state = load_checkpoint(file, map_location=device)
    recipe = get_recipe(state.get("recipe", "mamo"))  # runs saved before recipes existed are MAMO runs
    kept = file.parent / "tokenizer"  # the run's own copy of its tokenizer folder
    data = state["config"]
    if kept.is_dir() and data.get("data", {}).get("tokenizer"):
        data = {**data, "data": {**data["data"], "tokenizer": str(kept)}}
    cfg = recipe.config_from_dict(data, overrides or ())
    tok = build_tokenizer(cfg)
    model = recipe.build(cfg, TokenizerIds.of(tok))
    model.load_state_dict(state["model"])
    return recipe, cfg, model.to(device), tok


class Inference:
    """A trained model in eval mode with its tokenizer and config.

    Args:
        model: a built objective (:class:`~maskmm.training.Objective`); tokenizer: its tokenizer;
        cfg: its config.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, cfg: RunConfig) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.cfg = cfg

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu") -> Inference:
        """Load from a run folder (``model.pt`` or the newest ``step_N.pt``) or a checkpoint file."""
        _, cfg, model, tok = load_run(path, device=device)
        return cls(model, tok, cfg)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, images: Tensor) -> Tensor:
        """``[0, 1]`` images -> the normalisation used in training (``data.normalize``)."""
        t = image_transform(self.cfg)
        return images if t is None else t(images)

    @torch.no_grad()
    def encode_images(self, images: Tensor, batch_size: int = 128, *, preprocessed: bool = False) -> Encoded:
        """``images float [N, 3, H, W]`` in ``[0, 1]`` (normalised here), or already normalised
        with ``preprocessed=True`` (e.g. items of the configured datasets)."""
        check_floating("images", images, ndim=4)
        if not preprocessed:
            images = self.preprocess(images)
        states, feat = encode_images(self.model, images, batch_size)
        return Encoded(states, None, feat)

    @torch.no_grad()
    def encode_texts(self, texts: list[str] | str, batch_size: int = 256) -> Encoded:
        """Tokenise (padded to ``data.max_text_len``) and encode captions."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return Encoded(
            *encode_texts(self.model, self.tokenizer, texts, self.cfg.data.max_text_len, batch_size)
        )

    @torch.no_grad()
    def itc_scores(self, images: Encoded, texts: Encoded) -> Tensor:
        """``fp32 [N_images, N_texts]`` cosine similarities of the ITC features."""
        return images.feat @ texts.feat.t()

    @torch.no_grad()
    def itm_scores(self, images: Encoded, texts: Encoded) -> Tensor:
        """``fp32 [N]`` ITM match probability of row ``i``'s image with row ``i``'s text.

        One side may have a single row; it is broadcast to the other's length.
        """
        ni, nt = images.states.shape[0], texts.states.shape[0]
        n = max(ni, nt)
        if ni not in (1, n) or nt not in (1, n):
            raise ValueError(f"images and texts must have equal row counts (or one row), got {ni} and {nt}")
        img = images.states.expand(n, -1, -1) if ni == 1 else images.states
        txt = texts.states.expand(n, -1, -1) if nt == 1 else texts.states
        valid = texts.valid.expand(n, -1) if nt == 1 else texts.valid
        return itm_match_prob(self.model, img, txt, valid)

    @torch.no_grad()
    def rank(self, image: Tensor, texts: list[str], *, k: int | None = None) -> tuple[Tensor, Tensor]:
        """Rank ``texts`` for one ``image [3, H, W]``: ITC, then ITM re-ranking of the top ``k``.

        Returns ``(order long [T], scores fp32 [T])``: candidate indices best first and their scores:
        for the re-ranked top ``k`` the score of ``eval.rerank_itc_weight`` (the ITM match
        probability, or ITM log-odds plus the weighted ITC similarity; see
        :func:`maskmm.evaluation.itm_itc_score`), after them the ITC order, below all of those.
        """
        check_floating("image", image, ndim=3)
        img = self.encode_images(image[None])
        txt = self.encode_texts(texts)
        sim = self.itc_scores(img, txt)
        k = self.cfg.eval.rerank_k if k is None else k
        k = min(k, len(texts)) if self.model.has_itm else 0
        w = self.cfg.eval.rerank_itc_weight

        def score(_: Tensor, ci: Tensor) -> Tensor:
            states = img.states.expand(ci.shape[0], -1, -1)
            return itm_itc_score(self.model.itm_logits(states, txt.states[ci], txt.valid[ci]), sim[0, ci], w)

        scores = rerank_topk(sim, k, score)[0]
        order = scores.argsort(descending=True)
        return order, scores[order]
