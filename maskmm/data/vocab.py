"""Attribute vocabulary and configuration of the built-in shapes data.

Scenes hold 1-3 flat, strongly coloured shapes on a dark background. Every object
has a colour, a shape, a size and a position; two objects stand in a spatial
relation. Positions are five anchors on a 3x3 grid (``left``, ``right``, ``top``,
``bottom``, ``center``); objects occupy distinct anchors, so they never overlap.

Held-out split rule (deterministic): a ``(colour, shape)`` pair is held out when
``colour_index == (3 * shape_index + 1) % n_colours``. With the default 8 colours
and 6 shapes this holds out 6 pairs, one per shape, each with a different colour,
so every colour and every shape is still seen in training, only not together.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "ANCHORS",
    "COLOURS",
    "POSITION_PHRASES",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "ShapesConfig",
    "default_heldout_pairs",
]

#: Colour name -> RGB in [0, 1]; saturated and far apart so a tiny model separates them quickly.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.75, 0.15),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.88, 0.10),
    "purple": (0.60, 0.15, 0.80),
    "orange": (1.00, 0.50, 0.00),
    "cyan": (0.05, 0.85, 0.90),
    "white": (0.95, 0.95, 0.95),
}

#: Shape names; all are mirror-symmetric about the vertical axis (so a flip maps a scene to a scene).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star")

#: Size name -> half extent of the object as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.08, "large": 0.125}

#: Anchor name -> (column, row) on a 3x3 grid; cell centres are at 0.2, 0.5, 0.8 of the side.
ANCHORS: dict[str, tuple[int, int]] = {
    "left": (0, 1),
    "right": (2, 1),
    "top": (1, 0),
    "bottom": (1, 2),
    "center": (1, 1),
}

#: Anchor name -> words of its position phrase.
POSITION_PHRASES: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}

#: Relation of object A to object B -> words; "A left of B" holds when A's column is smaller than B's.
RELATIONS: dict[str, str] = {
    "left": "left of",
    "right": "right of",
    "above": "above",
    "below": "below",
}

#: Relation -> its mirror image under a horizontal flip.
FLIPPED_RELATION: dict[str, str] = {"left": "right", "right": "left", "above": "above", "below": "below"}
#: Anchor -> its mirror image under a horizontal flip.
FLIPPED_ANCHOR: dict[str, str] = {
    "left": "right",
    "right": "left",
    "top": "top",
    "bottom": "bottom",
    "center": "center",
}

#: Grid coordinate of anchor cells, as a fraction of the image side.
GRID_COORDS: tuple[float, float, float] = (0.2, 0.5, 0.8)


def default_heldout_pairs(colours: tuple[str, ...], shapes: tuple[str, ...]) -> frozenset[tuple[str, str]]:
    """Held-out ``(colour, shape)`` pairs: ``colour_index == (3 * shape_index + 1) % len(colours)``."""
    n = len(colours)
    return frozenset((colours[(3 * s + 1) % n], shape) for s, shape in enumerate(shapes))


@dataclass(frozen=True)
class ShapesConfig:
    """Generation parameters of the built-in shapes data.

    Args:
        image_size: side of the square images in pixels (64-96 for quick runs, 224 for base models).
        colours: colour name -> RGB in ``[0, 1]``.
        shapes: shape names (subset of :data:`SHAPES`).
        sizes: size name -> half extent as a fraction of the side. Objects on neighbouring anchors
            (0.3 apart) must not touch: ``2 * max(sizes) * (1 + size_jitter) < 0.3 - 2 * position_jitter``.
        object_count_probs: probabilities of 1, 2 and 3 objects per scene.
        position_jitter: uniform jitter of object centres around their anchor (fraction of the side).
        size_jitter: relative uniform jitter of object sizes.
        background: range of the (grey) background intensity.
        heldout_pairs: ``(colour, shape)`` pairs never generated in ``train``/``val`` and present in
            every ``heldout`` scene; ``None`` uses :func:`default_heldout_pairs`.
    """

    image_size: int = 64
    colours: Mapping[str, tuple[float, float, float]] = field(default_factory=lambda: dict(COLOURS))
    shapes: tuple[str, ...] = SHAPES
    sizes: Mapping[str, float] = field(default_factory=lambda: dict(SIZES))
    object_count_probs: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    position_jitter: float = 0.015
    size_jitter: float = 0.06
    background: tuple[float, float] = (0.05, 0.2)
    heldout_pairs: frozenset[tuple[str, str]] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 16:
            raise ValueError(f"image_size must be an int >= 16, got {self.image_size!r}")
        if len(self.colours) < 2:
            raise ValueError(f"colours must name at least 2 colours, got {list(self.colours)}")
        for name, rgb in self.colours.items():
            if len(rgb) != 3 or not all(0.0 <= float(c) <= 1.0 for c in rgb):
                raise ValueError(f"colours[{name!r}] must be 3 floats in [0, 1], got {rgb!r}")
        unknown = [s for s in self.shapes if s not in SHAPES]
        if unknown or len(self.shapes) < 2 or len(set(self.shapes)) != len(self.shapes):
            raise ValueError(f"shapes must be >= 2 distinct names from {SHAPES}, got {self.shapes!r}")
        if len(self.sizes) < 2 or not all(float(v) >= 0.02 for v in self.sizes.values()):
            raise ValueError(f"sizes must map >= 2 names to half extents >= 0.02, got {dict(self.sizes)}")
        probs = tuple(float(p) for p in self.object_count_probs)
        if len(probs) != 3 or any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
            raise ValueError(f"object_count_probs must be 3 non-negative floats summing to 1, got {probs}")
        if not 0.0 <= self.position_jitter < 0.05:
            raise ValueError(f"position_jitter must lie in [0, 0.05), got {self.position_jitter}")
        if not 0.0 <= self.size_jitter < 0.5:
            raise ValueError(f"size_jitter must lie in [0, 0.5), got {self.size_jitter}")
        reach = max(float(v) for v in self.sizes.values()) * (1.0 + self.size_jitter)
        if 2 * reach >= 0.3 - 2 * self.position_jitter:
            raise ValueError(
                f"sizes {dict(self.sizes)} with size_jitter {self.size_jitter} and position_jitter "
                f"{self.position_jitter} let neighbouring objects touch; need "
                "2 * max(sizes) * (1 + size_jitter) < 0.3 - 2 * position_jitter"
            )
        ordered = sorted(float(v) for v in self.sizes.values())
        if any(
            a * (1 + self.size_jitter) >= b * (1 - self.size_jitter) for a, b in itertools.pairwise(ordered)
        ):
            raise ValueError(
                f"sizes {dict(self.sizes)} overlap once jittered by size_jitter {self.size_jitter}"
            )
        lo, hi = self.background
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"background must be (lo, hi) with 0 <= lo <= hi <= 1, got {self.background}")
        pairs = self.resolved_heldout_pairs()
        for colour, shape in pairs:
            if colour not in self.colours or shape not in self.shapes:
                raise ValueError(f"heldout_pairs entry {(colour, shape)} names an unknown colour or shape")
        if len(pairs) >= len(self.colours) * len(self.shapes):
            raise ValueError("heldout_pairs must leave at least one (colour, shape) pair for training")

    @property
    def colour_names(self) -> tuple[str, ...]:
        return tuple(self.colours)

    @property
    def size_names(self) -> tuple[str, ...]:
        return tuple(self.sizes)

    def resolved_heldout_pairs(self) -> frozenset[tuple[str, str]]:
        if self.heldout_pairs is None:
            return default_heldout_pairs(tuple(self.colours), tuple(self.shapes))
        return frozenset(self.heldout_pairs)
