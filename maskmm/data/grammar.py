"""Caption grammar of the built-in shapes data, and what a caption asserts.

A caption mentions every object of its scene once, as a noun phrase
``a {size} {colour} {shape}``. One object: ``NP {position}``. Two objects:
``NP0 {relation} NP1``. Three objects: ``NP0 {relation} NP1 and NP2 {position}``.
Each count has three templates (plain, ``there is ...``, ``... is ...``). Every
attribute is one word, so a caption change of one attribute changes one word
(positions and relations are short fixed phrases).

Meaning: a caption is a set of facts, and it is true for a scene when every fact
is. Facts are ``("at", size, colour, shape, anchor)`` and
``("rel", (size, colour, shape), relation, (size, colour, shape))``. Relations are
read on the anchor grid: ``left`` = smaller column, ``above`` = smaller row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from .vocab import ANCHORS, POSITION_PHRASES, RELATIONS, ShapesConfig

__all__ = [
    "TEMPLATES",
    "CaptionSpec",
    "Mention",
    "caption_holds",
    "grammar_words",
    "realize",
    "scene_facts",
    "spec_facts",
    "true_relations",
]

#: Templates per number of mentions; ``{0}``.. are noun phrases, ``{p0}``.. positions, ``{rel}`` the relation.
TEMPLATES: dict[int, tuple[str, ...]] = {
    1: ("{0} {p0}", "there is {0} {p0}", "an image of {0} {p0}"),
    2: ("{0} {rel} {1}", "there is {0} {rel} {1}", "{0} is {rel} {1}"),
    3: (
        "{0} {rel} {1} and {2} {p2}",
        "there is {0} {rel} {1} and {2} {p2}",
        "{0} is {rel} {1} and {2} is {p2}",
    ),
}


@dataclass(frozen=True)
class Mention:
    """One noun phrase ``a {size} {colour} {shape}``, with the anchor its position phrase states (or None)."""

    size: str
    colour: str
    shape: str
    position: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.size, self.colour, self.shape)


@dataclass(frozen=True)
class CaptionSpec:
    """What a caption says: a template, its mentions in order, and the relation of mention 0 to mention 1."""

    template: int
    mentions: tuple[Mention, ...]
    relation: str | None = None

    def __post_init__(self) -> None:
        n = len(self.mentions)
        if n not in TEMPLATES:
            raise ValueError(f"a caption mentions 1-3 objects, got {n}")
        if not 0 <= self.template < len(TEMPLATES[n]):
            raise ValueError(f"template must lie in [0, {len(TEMPLATES[n])}), got {self.template}")
        if (n >= 2) != (self.relation is not None):
            raise ValueError(
                f"relation must be set exactly when there are >= 2 mentions, got {self.relation!r}"
            )
        if self.relation is not None and self.relation not in RELATIONS:
            raise ValueError(f"relation must be one of {tuple(RELATIONS)}, got {self.relation!r}")
        for i, m in enumerate(self.mentions):
            needs_position = (n == 1 and i == 0) or (n == 3 and i == 2)
            if needs_position != (m.position is not None):
                raise ValueError(
                    f"mention {i} of a {n}-object caption {'needs' if needs_position else 'has no'} position"
                )
            if m.position is not None and m.position not in ANCHORS:
                raise ValueError(f"position must be one of {tuple(ANCHORS)}, got {m.position!r}")

    @property
    def text(self) -> str:
        return " ".join(realize(self)[0])

    def with_mention(self, i: int, **changes: str) -> CaptionSpec:
        mentions = list(self.mentions)
        mentions[i] = replace(mentions[i], **changes)
        return replace(self, mentions=tuple(mentions))


def realize(spec: CaptionSpec) -> tuple[list[str], list[tuple[int, int]]]:
    """Words of ``spec``'s caption, and each mention's noun-phrase word span ``(start, end)`` (end excl.)."""
    words: list[str] = []
    spans: list[tuple[int, int]] = [(0, 0)] * len(spec.mentions)
    for slot in TEMPLATES[len(spec.mentions)][spec.template].split(" "):
        if slot == "{rel}":
            words.extend(RELATIONS[spec.relation].split(" "))  # type: ignore[index]
        elif slot.startswith("{p"):
            words.extend(POSITION_PHRASES[spec.mentions[int(slot[2:-1])].position].split(" "))  # type: ignore[index]
        elif slot.startswith("{"):
            i = int(slot[1:-1])
            m = spec.mentions[i]
            spans[i] = (len(words), len(words) + 4)
            words.extend(("a", m.size, m.colour, m.shape))
        else:
            words.append(slot)
    return words, spans


def true_relations(a: str, b: str) -> tuple[str, ...]:
    """Relations that hold from an object on anchor ``a`` to one on anchor ``b``."""
    (ca, ra), (cb, rb) = ANCHORS[a], ANCHORS[b]
    out = []
    if ca < cb:
        out.append("left")
    if ca > cb:
        out.append("right")
    if ra < rb:
        out.append("above")
    if ra > rb:
        out.append("below")
    return tuple(out)


def spec_facts(spec: CaptionSpec) -> frozenset[tuple]:
    """The facts ``spec`` asserts (see the module docstring)."""
    facts: set[tuple] = set()
    ms = spec.mentions
    if spec.relation is not None:
        facts.add(("rel", ms[0].key, spec.relation, ms[1].key))
    for m in ms:
        if m.position is not None:
            facts.add(("at", *m.key, m.position))
    return frozenset(facts)


def scene_facts(objects: Iterable[tuple[str, str, str, str]]) -> frozenset[tuple]:
    """All facts true of a scene given its objects as ``(size, colour, shape, anchor)``."""
    objs = list(objects)
    facts: set[tuple] = {("at", s, c, sh, a) for s, c, sh, a in objs}
    for i, (s1, c1, sh1, a1) in enumerate(objs):
        for j, (s2, c2, sh2, a2) in enumerate(objs):
            if i != j:
                for rel in true_relations(a1, a2):
                    facts.add(("rel", (s1, c1, sh1), rel, (s2, c2, sh2)))
    return frozenset(facts)


def caption_holds(spec: CaptionSpec, facts: frozenset[tuple]) -> bool:
    """Whether the caption ``spec`` is true of a scene with the given :func:`scene_facts`."""
    return spec_facts(spec) <= facts


def grammar_words(config: ShapesConfig | None = None) -> list[str]:
    """Every word the grammar can produce with ``config``'s vocabulary (default: built-in), in fixed order."""
    from .vocab import COLOURS, SHAPES, SIZES

    colours, shapes, sizes = (
        (COLOURS, SHAPES, SIZES) if config is None else (config.colours, config.shapes, config.sizes)
    )

    words: list[str] = []
    for templates in TEMPLATES.values():
        for t in templates:
            words.extend(w for w in t.split(" ") if not w.startswith("{"))
    words.append("a")
    for phrase in (*POSITION_PHRASES.values(), *RELATIONS.values()):
        words.extend(phrase.split(" "))
    words.extend((*sizes, *colours, *shapes))
    return list(dict.fromkeys(words))
