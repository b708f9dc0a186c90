"""Config section of the evaluation, shared by every recipe."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["EVAL_SPLITS", "EvalConfig"]

#: Splits of the built-in data.
EVAL_SPLITS = ("train", "val", "heldout")


@dataclass
class EvalConfig:
    """Which splits, how many candidates, ITM re-ranking of the ITC top ``rerank_k`` (``itm``), and
    the sizes of the fine-grained and grounding tests.

    ``splits`` are the built-in data's. ``test_files``: the user's ALBEF-format retrieval files
    (``[{"image": ..., "caption": [...]}]``; all their images and captions are candidates; set
    ``rerank_k`` as ALBEF's ``k_test``: 256 for COCO 5k, 128 for Flickr 1k); ``finegrained_files``:
    distractor files (see :mod:`maskmm.evaluation.files`); image paths are relative to
    ``image_root`` (empty: ``data.image_root``). A run trained on ``data.kind: json`` is evaluated on
    its test files only: the built-in splits would score other data.

    ``rerank_itc_weight``: the re-ranked score of a pair is its ITM match probability (``0``, ALBEF),
    or its ITM log-odds plus this weight times its ITC cosine similarity (``1 / temperature`` makes
    both logits; :func:`maskmm.evaluation.itm_itc_score`)."""

    splits: list[str] = field(default_factory=lambda: ["val", "heldout"])
    num_candidates: int = 1000
    rerank_k: int = 16
    rerank_itc_weight: float = 0.0
    batch_size: int = 128
    finegrained_samples: int = 200
    grounding_samples: int = 100
    itm: bool = True
    test_files: list[str] = field(default_factory=list)
    finegrained_files: list[str] = field(default_factory=list)
    image_root: str = ""

    def check(self, p: str = "eval.") -> None:
        for s in self.splits:
            if s not in EVAL_SPLITS:
                raise ValueError(
                    f"config field '{p}splits' entries must be one of {list(EVAL_SPLITS)}, got {s!r}"
                )
        for name, zero_ok in (
            ("num_candidates", False),
            ("rerank_k", True),
            ("batch_size", False),
            ("finegrained_samples", True),
            ("grounding_samples", True),
        ):
            v = getattr(self, name)
            if v < 0 or (v == 0 and not zero_ok):
                raise ValueError(f"config field '{p}{name}' must be {'>= 0' if zero_ok else '> 0'}, got {v}")
        if self.rerank_itc_weight < 0:
            raise ValueError(
                f"config field '{p}rerank_itc_weight' must be >= 0, got {self.rerank_itc_weight}"
            )
