"""Scenes of the built-in shapes data, sampled deterministically from ``(seed, split, index)``.

A scene has 1-3 objects on distinct anchors with distinct ``(colour, shape)`` pairs
(so every noun phrase of its caption refers to exactly one object), a grey
background level and the :class:`~maskmm.data.grammar.CaptionSpec` of its
caption. Objects are stored in mention order: ``objects[i]`` is the object the
caption's ``i``-th noun phrase refers to.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from itertools import permutations

import numpy as np

from .grammar import TEMPLATES, CaptionSpec, Mention, realize, scene_facts, true_relations
from .raster import shape_extent
from .vocab import ANCHORS, FLIPPED_ANCHOR, FLIPPED_RELATION, GRID_COORDS, ShapesConfig

__all__ = ["SPLITS", "Scene", "SceneObject", "ScenePlanner"]

#: Split name -> code mixed into the random stream (train and val differ only by stream).
SPLITS: dict[str, int] = {"train": 0, "val": 1, "heldout": 2}
_ANCHOR_NAMES = tuple(ANCHORS)


@dataclass(frozen=True)
class SceneObject:
    """One object. ``cx``, ``cy`` (centre) and ``radius`` (half extent) are fractions of the image side."""

    shape: str
    colour: str
    size: str
    anchor: str
    cx: float
    cy: float
    radius: float

    def box(self, image_size: int) -> tuple[float, float, float, float]:
        """Tight box ``(x0, y0, x1, y1)`` in pixels (pixel ``j`` covers ``[j, j + 1)``)."""
        ex0, ey0, ex1, ey1 = shape_extent(self.shape)
        s, r = image_size, self.radius * image_size
        return (self.cx * s + ex0 * r, self.cy * s + ey0 * r, self.cx * s + ex1 * r, self.cy * s + ey1 * r)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.size, self.colour, self.shape, self.anchor)


@dataclass(frozen=True)
class Scene:
    """A scene and its caption; ``objects[i]`` is referred to by ``spec.mentions[i]``."""

    objects: tuple[SceneObject, ...]
    background: float
    spec: CaptionSpec
    image_size: int

    @property
    def caption(self) -> str:
        return self.spec.text

    @cached_property
    def facts(self) -> frozenset[tuple]:
        """Every fact true of this scene (see :mod:`maskmm.data.grammar`)."""
        return scene_facts(o.key for o in self.objects)

    def boxes(self) -> np.ndarray:
        """``float32 [n_objects, 4]`` boxes ``(x0, y0, x1, y1)`` in pixels, in mention order."""
        return np.asarray([o.box(self.image_size) for o in self.objects], dtype=np.float32).reshape(-1, 4)

    def phrase_spans(self) -> np.ndarray:
        """``int64 [n_objects, 2]``: word span ``(start, end)`` of each object's noun phrase."""
        return np.asarray(realize(self.spec)[1], dtype=np.int64).reshape(-1, 2)

    def mirrored(self) -> Scene:
        """The scene reflected left-right (what a horizontal flip of its image shows), caption included."""
        objects = tuple(replace(o, cx=1.0 - o.cx, anchor=FLIPPED_ANCHOR[o.anchor]) for o in self.objects)
        mentions = tuple(
            replace(m, position=None if m.position is None else FLIPPED_ANCHOR[m.position])
            for m in self.spec.mentions
        )
        relation = None if self.spec.relation is None else FLIPPED_RELATION[self.spec.relation]
        return replace(self, objects=objects, spec=replace(self.spec, mentions=mentions, relation=relation))


def _mention(obj: SceneObject, with_position: bool) -> Mention:
    return Mention(obj.size, obj.colour, obj.shape, obj.anchor if with_position else None)


def spec_for(objects: tuple[SceneObject, ...], template: int, relation: str | None) -> CaptionSpec:
    """Caption spec describing ``objects`` (in mention order) with the given template and relation."""
    n = len(objects)
    mentions = tuple(_mention(o, (n == 1) or (n == 3 and i == 2)) for i, o in enumerate(objects))
    return CaptionSpec(template=template, mentions=mentions, relation=relation)


class ScenePlanner:
    """Samples scenes for one configuration and split.

    ``train`` and ``val`` never use a held-out ``(colour, shape)`` pair; every
    ``heldout`` scene contains at least one (its other objects use any pair).
    """

    def __init__(self, config: ShapesConfig, split: str, seed: int) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.config, self.split, self.seed = config, split, seed
        heldout = config.resolved_heldout_pairs()
        all_pairs = [(c, s) for c in config.colour_names for s in config.shapes]
        self._all_pairs = all_pairs
        self._seen_pairs = [p for p in all_pairs if p not in heldout]
        self._heldout_pairs = sorted(heldout)
        if split == "heldout" and not self._heldout_pairs:
            raise ValueError("the heldout split needs at least one held-out (colour, shape) pair")
        self._count_cdf = np.cumsum(config.object_count_probs)

    def rng(self, index: int, stream: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLITS[self.split], index, stream])

    @staticmethod
    def _distinct(rng: np.random.Generator, pool: int, n: int) -> list[int]:
        """``n`` distinct indices below ``pool`` (cheap rejection draw; permutation fallback)."""
        picked: list[int] = []
        for i in rng.integers(pool, size=3 * n).tolist():
            if i not in picked:
                picked.append(i)
                if len(picked) == n:
                    return picked
        return [int(i) for i in rng.permutation(pool)[:n]]

    def _pairs(self, rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
        if self.split != "heldout":
            pool = self._seen_pairs
            return [pool[i] for i in self._distinct(rng, len(pool), min(n, len(pool)))]
        first = self._heldout_pairs[int(rng.integers(len(self._heldout_pairs)))]
        rest = [self._all_pairs[i] for i in self._distinct(rng, len(self._all_pairs), n)]
        return [first, *[p for p in rest if p != first][: n - 1]]

    def scene(self, index: int) -> Scene:
        cfg = self.config
        rng = self.rng(index)
        u = rng.random(4)
        n = int(np.searchsorted(self._count_cdf, u[0] * self._count_cdf[-1], side="right")) + 1
        n = min(n, 3)
        pairs = self._pairs(rng, n)
        n = len(pairs)
        anchors = rng.permutation(len(_ANCHOR_NAMES))[:n]
        sizes = rng.integers(len(cfg.sizes), size=n)
        jit = rng.uniform(-1.0, 1.0, size=(n, 3))
        size_names = cfg.size_names
        objects = []
        for k in range(n):
            anchor = _ANCHOR_NAMES[anchors[k]]
            col, row = ANCHORS[anchor]
            size = size_names[sizes[k]]
            objects.append(
                SceneObject(
                    shape=pairs[k][1],
                    colour=pairs[k][0],
                    size=size,
                    anchor=anchor,
                    cx=GRID_COORDS[col] + cfg.position_jitter * float(jit[k, 0]),
                    cy=GRID_COORDS[row] + cfg.position_jitter * float(jit[k, 1]),
                    radius=float(cfg.sizes[size]) * (1.0 + cfg.size_jitter * float(jit[k, 2])),
                )
            )
        objs = tuple(objects)
        template = int(u[1] * len(TEMPLATES[n]))
        relation = None
        if n >= 2:
            rels = true_relations(objs[0].anchor, objs[1].anchor)
            relation = rels[int(u[2] * len(rels))]
        lo, hi = cfg.background
        return Scene(
            objects=objs,
            background=lo + (hi - lo) * float(u[3]),
            spec=spec_for(objs, template, relation),
            image_size=cfg.image_size,
        )

    def paraphrases(self, scene: Scene, index: int, k: int) -> list[CaptionSpec]:
        """Up to ``k`` distinct true caption specs of ``scene`` (its own first), in a seeded order.

        Alternatives vary the template, the mention order and (where two hold) the relation.
        """
        options: list[CaptionSpec] = []
        n = len(scene.objects)
        for order in permutations(range(n)):
            objs = tuple(scene.objects[i] for i in order)
            rels: tuple[str | None, ...] = (
                true_relations(objs[0].anchor, objs[1].anchor) if n >= 2 else (None,)
            )
            for rel in rels:
                for t in range(len(TEMPLATES[n])):
                    spec = spec_for(objs, t, rel)
                    if spec != scene.spec:
                        options.append(spec)
        perm = self.rng(index, stream=1).permutation(len(options))
        return [scene.spec, *[options[i] for i in perm[: max(k - 1, 0)]]][:k]
