"""Fine-grained negative captions for the built-in shapes data.

A distractor is the true caption with exactly one attribute changed (one
mention's colour, shape or size, one stated position, or the relation) such that
the new caption is false for the image. Candidates whose mentions would repeat a
``(colour, shape)`` pair are skipped: scenes never repeat one, and a repeated
noun phrase could be read as naming the same object twice.
"""

from __future__ import annotations

from collections.abc import Mapping

from .grammar import CaptionSpec, caption_holds
from .scenes import Scene
from .vocab import ANCHORS, COLOURS, RELATIONS, SHAPES, SIZES, ShapesConfig

__all__ = ["DISTRACTOR_ATTRIBUTES", "distractor_specs", "make_distractors"]

_OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}

#: Attribute names, in the order :func:`make_distractors` returns them.
DISTRACTOR_ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "size", "position", "relation")


def _scene_of(sample: Scene | Mapping) -> Scene:
    if isinstance(sample, Scene):
        return sample
    if isinstance(sample, Mapping) and isinstance(sample.get("scene"), Scene):
        return sample["scene"]
    raise TypeError(
        "sample must be a Scene or an item of ShapesDataset (a dict with a 'scene' entry), "
        f"got {type(sample).__name__}"
    )


def _distinct_pairs(spec: CaptionSpec) -> bool:
    pairs = [(m.colour, m.shape) for m in spec.mentions]
    return len(set(pairs)) == len(pairs)


def distractor_specs(
    sample: Scene | Mapping, config: ShapesConfig | None = None
) -> dict[str, list[CaptionSpec]]:
    """Like :func:`make_distractors`, returning :class:`CaptionSpec` objects instead of strings."""
    scene = _scene_of(sample)
    colours = tuple(config.colours) if config is not None else tuple(COLOURS)
    shapes = tuple(config.shapes) if config is not None else SHAPES
    sizes = tuple(config.sizes) if config is not None else tuple(SIZES)
    spec, facts = scene.spec, scene.facts
    out: dict[str, list[CaptionSpec]] = {a: [] for a in DISTRACTOR_ATTRIBUTES}

    def keep(attr: str, cand: CaptionSpec) -> None:
        if _distinct_pairs(cand) and not caption_holds(cand, facts):
            out[attr].append(cand)

    for i, m in enumerate(spec.mentions):
        for c in colours:
            if c != m.colour:
                keep("colour", spec.with_mention(i, colour=c))
        for s in shapes:
            if s != m.shape:
                keep("shape", spec.with_mention(i, shape=s))
        for z in sizes:
            if z != m.size:
                keep("size", spec.with_mention(i, size=z))
        if m.position is not None:
            for a in ANCHORS:
                if a != m.position:
                    keep("position", spec.with_mention(i, position=a))
    if spec.relation is not None:
        opposite = _OPPOSITE[spec.relation]
        for r in (opposite, *(r for r in RELATIONS if r not in (opposite, spec.relation))):
            keep("relation", CaptionSpec(spec.template, spec.mentions, r))
    return out


def make_distractors(sample: Scene | Mapping, config: ShapesConfig | None = None) -> dict[str, list[str]]:
    """Captions false for ``sample``'s image that differ from its caption in exactly one attribute.

    Args:
        sample: an item of :class:`~maskmm.data.procedural.ShapesDataset` or its ``Scene``.
        config: the vocabulary to draw replacements from (default: the built-in one).
    Returns:
        ``{"colour", "shape", "size", "position", "relation"} -> list of captions``, in a fixed
        order; a list is empty when the caption states no such attribute (e.g. no relation in a
        one-object caption, no position in a two-object caption). The relation list always holds
        the opposite relation (``left`` <-> ``right``, ``above`` <-> ``below``) first when it is false.
    """
    specs = distractor_specs(sample, config)
    return {attr: [s.text for s in lst] for attr, lst in specs.items()}
