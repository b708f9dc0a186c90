"""Plain reference for the shapes-data tests: a caption parser and a truth evaluator.

Written from the documented grammar and geometry, not from maskmm's code.
"""

from __future__ import annotations

import itertools
import re

NP = r"a (small|large) ([a-z]+) ([a-z]+)"
POS = r"(on the left|on the right|at the top|at the bottom|in the center)"
REL = r"(left of|right of|above|below)"
PATTERNS = [
    (1, re.compile(rf"^(?:there is |an image of )?{NP} {POS}$")),
    (2, re.compile(rf"^(?:there is )?{NP} (?:is )?{REL} {NP}$")),
    (3, re.compile(rf"^(?:there is )?{NP} (?:is )?{REL} {NP} and {NP} (?:is )?{POS}$")),
]
POS_WORDS = {
    "on the left": "left",
    "on the right": "right",
    "at the top": "top",
    "at the bottom": "bottom",
    "in the center": "center",
}
REL_WORDS = {"left of": "left", "right of": "right", "above": "above", "below": "below"}
# anchor -> expected centre (fraction of the side)
ANCHOR_XY = {
    "left": (0.2, 0.5),
    "right": (0.8, 0.5),
    "top": (0.5, 0.2),
    "bottom": (0.5, 0.8),
    "center": (0.5, 0.5),
}


def parse(caption: str) -> dict:
    """-> {"nps": [(size, colour, shape), ...], "rel": str | None, "pos": (np_index, anchor) | None}."""
    for n, pat in PATTERNS:
        m = pat.match(caption)
        if m is None:
            continue
        g = m.groups()
        if n == 1:
            return {"nps": [g[0:3]], "rel": None, "pos": (0, POS_WORDS[g[3]])}
        if n == 2:
            return {"nps": [g[0:3], g[4:7]], "rel": REL_WORDS[g[3]], "pos": None}
        return {"nps": [g[0:3], g[4:7], g[7:10]], "rel": REL_WORDS[g[3]], "pos": (2, POS_WORDS[g[10]])}
    raise AssertionError(f"caption does not follow the grammar: {caption!r}")


def nearest_anchor(cx: float, cy: float) -> str:
    return min(ANCHOR_XY, key=lambda a: (ANCHOR_XY[a][0] - cx) ** 2 + (ANCHOR_XY[a][1] - cy) ** 2)


def relation_holds(rel: str, a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Relation of centre ``a`` to centre ``b`` (fractions of the side, y down)."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    return {"left": dx < -0.15, "right": dx > 0.15, "above": dy < -0.15, "below": dy > 0.15}[rel]


def caption_true(caption: str, objects: list[dict]) -> bool:
    """objects: dicts with size, colour, shape, cx, cy. Existential reading with distinct objects."""
    p = parse(caption)
    nps = p["nps"]
    for assign in itertools.permutations(range(len(objects)), len(nps)):
        objs = [objects[i] for i in assign]
        if any((o["size"], o["colour"], o["shape"]) != tuple(np_) for o, np_ in zip(objs, nps)):
            continue
        if p["rel"] is not None and not relation_holds(
            p["rel"], (objs[0]["cx"], objs[0]["cy"]), (objs[1]["cx"], objs[1]["cy"])
        ):
            continue
        if p["pos"] is not None:
            k, anchor = p["pos"]
            if nearest_anchor(objs[k]["cx"], objs[k]["cy"]) != anchor:
                continue
        return True
    return False


def objects_of(scene) -> list[dict]:
    return [
        {"size": o.size, "colour": o.colour, "shape": o.shape, "cx": o.cx, "cy": o.cy, "radius": o.radius}
        for o in scene.objects
    ]
