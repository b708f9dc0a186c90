"""Image transforms on tensors, without torchvision.

Functional ops take ``image`` as ``float [C, H, W]`` or ``[B, C, H, W]``. The
transform classes are callables ``t(x, generator=None)`` where ``x`` is either an
image tensor or a dataset item (a ``dict`` with ``"image"`` and optionally
``"caption"``, ``"boxes"`` ``[n, 4]`` in pixels, ``"alpha"`` ``[n, H, W]`` and
``"scene"``); on items they keep boxes and coverage maps aligned with the image.
Random draws use ``generator`` (a CPU ``torch.Generator``) or the global RNG. The
few scalar draws per call are read on the host: these are data-loader ops.

Horizontal flips and captions: a flip turns "left of" into "right of".
:class:`RandomHorizontalFlip` therefore swaps ``left``/``right`` in the caption
(whole words, case kept) and mirrors the scene metadata of the built-in data, so
flipped items stay correct; pass ``swap_words=()`` to flip images only.
:class:`RandomResizedCrop` may cut objects out of a built-in scene and so make its
caption false; it is meant for real photographs (the built-in images are rendered
at their final size and need no crop).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import check_floating, check_generator

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LEFT_RIGHT",
    "Compose",
    "Normalize",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Resize",
    "hflip",
    "named_normalize",
    "normalize",
    "pil_to_tensor",
    "random_resized_crop_params",
    "resize",
    "resized_crop",
    "swap_words",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
#: Word pairs swapped in captions by a horizontal flip.
LEFT_RIGHT: tuple[tuple[str, str], ...] = (("left", "right"),)


def _check_image(name: str, image: object) -> torch.Tensor:
    t = check_floating(name, image)
    if t.dim() not in (3, 4):
        raise ValueError(f"{name} must have shape [C, H, W] or [B, C, H, W], got {list(t.shape)}")
    return t


def _size2(name: str, size: object) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise ValueError(f"{name} must be a positive int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def pil_to_tensor(img: object) -> torch.Tensor:
    """PIL image -> ``float32 [3, H, W]`` in ``[0, 1]`` (converted to RGB)."""
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("pil_to_tensor needs Pillow: pip install pillow") from e
    if not isinstance(img, Image.Image):
        raise TypeError(f"img must be a PIL.Image.Image, got {type(img).__name__}")
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def resize(image: torch.Tensor, size: int | tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """Bilinear resize to ``size`` (``int`` = square, or ``(height, width)``), anti-aliased when shrinking."""
    image = _check_image("image", image)
    h, w = _size2("size", size)
    batched = image.dim() == 4
    x = image if batched else image[None]
    out = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=antialias)
    return out if batched else out[0]


def resized_crop(
    image: torch.Tensor, top: int, left: int, height: int, width: int, size: int | tuple[int, int]
) -> torch.Tensor:
    """Crop rows ``[top, top + height)`` and columns ``[left, left + width)``, then :func:`resize`."""
    image = _check_image("image", image)
    H, W = image.shape[-2:]
    if not (top >= 0 and left >= 0 and height > 0 and width > 0 and top + height <= H and left + width <= W):
        raise ValueError(
            f"crop (top={top}, left={left}, height={height}, width={width}) leaves the {H}x{W} image"
        )
    return resize(image[..., top : top + height, left : left + width], size)


def hflip(image: torch.Tensor) -> torch.Tensor:
    """Mirror the last (width) dimension."""
    return _check_image("image", image).flip(-1)


def normalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(image - mean) / std`` per channel (channel dim ``-3``), in the image's dtype."""
    image = _check_image("image", image)
    c = image.shape[-3]
    if len(mean) != c or len(std) != c:
        raise ValueError(
            f"mean and std must have {c} entries (one per channel), got {len(mean)} and {len(std)}"
        )
    if any(float(s) <= 0 for s in std):
        raise ValueError(f"std must be positive, got {tuple(std)}")
    m = torch.tensor(mean, dtype=image.dtype, device=image.device).view(c, 1, 1)
    s = torch.tensor(std, dtype=image.dtype, device=image.device).view(c, 1, 1)
    return (image - m) / s


def random_resized_crop_params(
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """Crop box ``(top, left, h, w)`` covering a random area fraction in ``scale`` with aspect in ``ratio``.

    Ten candidates are drawn at once (area uniform in ``scale``, log aspect uniform in
    ``ratio``); the first that fits is used, else a centre crop with the aspect clamped
    into ``ratio``.
    """
    if not (0 < scale[0] <= scale[1]):
        raise ValueError(f"scale must be (lo, hi) with 0 < lo <= hi, got {scale}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"ratio must be (lo, hi) with 0 < lo <= hi, got {ratio}")
    check_generator("generator", generator, torch.device("cpu"))
    area = height * width
    u = torch.rand(2, 10, generator=generator, dtype=torch.float64)
    target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1]
    aspect = torch.exp(log_r)
    ws = torch.round(torch.sqrt(target * aspect)).long()
    hs = torch.round(torch.sqrt(target / aspect)).long()
    ok = (ws > 0) & (ws <= width) & (hs > 0) & (hs <= height)
    if bool(ok.any()):
        k = int(ok.long().argmax())
        h, w = int(hs[k]), int(ws[k])
        pos = torch.rand(2, generator=generator, dtype=torch.float64)
        top = int(pos[0] * (height - h + 1))
        left = int(pos[1] * (width - w + 1))
        return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def swap_words(text: str, pairs: Sequence[tuple[str, str]] = LEFT_RIGHT) -> str:
    """Exchange each pair of whole words in ``text`` (case-insensitive match; the case is kept)."""
    if not pairs:
        return text
    table: dict[str, str] = {}
    for a, b in pairs:
        table[a.lower()], table[b.lower()] = b.lower(), a.lower()
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in table) + r")\b", re.IGNORECASE)

    def sub(m: re.Match) -> str:
        word, out = m.group(0), table[m.group(0).lower()]
        if word.isupper():
            return out.upper()
        return out.capitalize() if word[0].isupper() else out

    return pattern.sub(sub, text)


def _is_item(x: object) -> bool:
    return isinstance(x, Mapping)


class Compose:
    """Apply transforms in order, passing the same ``generator`` to each."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        if not all(callable(t) for t in transforms):
            raise TypeError("transforms must all be callable")
        self.transforms = list(transforms)

    def __call__(self, x, generator: torch.Generator | None = None):
        for t in self.transforms:
            x = t(x, generator=generator)
        return x


class Resize:
    """Resize to ``size``; on items, boxes are scaled along."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = _size2("size", size)

    def __call__(self, x, generator: torch.Generator | None = None):
        if not _is_item(x):
            return resize(x, self.size)
        item = dict(x)
        H, W = item["image"].shape[-2:]
        item["image"] = resize(item["image"], self.size)
        _map_boxes(item, 0, 0, H, W, self.size)
        return item


class RandomResizedCrop:
    """Random crop (area fraction ``scale``, aspect ``ratio``; torchvision's defaults) resized to ``size``.

    On items, boxes are shifted, scaled and clipped to the crop (a box outside the crop
    becomes empty, ``x0 == x1`` or ``y0 == y1``). See the module note on built-in scenes.
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        self.size = _size2("size", size)
        random_resized_crop_params(8, 8, scale, ratio, torch.Generator())  # validates scale/ratio
        self.scale, self.ratio = tuple(scale), tuple(ratio)

    def __call__(self, x, generator: torch.Generator | None = None):
        image = x["image"] if _is_item(x) else x
        H, W = _check_image("image", image).shape[-2:]
        top, left, h, w = random_resized_crop_params(H, W, self.scale, self.ratio, generator)
        if not _is_item(x):
            return resized_crop(image, top, left, h, w, self.size)
        item = dict(x)
        item["image"] = resized_crop(image, top, left, h, w, self.size)
        _map_boxes(item, top, left, h, w, self.size)
        return item


def _map_boxes(item: dict, top: int, left: int, h: int, w: int, size: tuple[int, int]) -> None:
    """Move ``item``'s boxes and coverage maps from the crop ``(top, left, h, w)`` to an image of ``size``."""
    sy, sx = size[0] / h, size[1] / w
    if "boxes" in item:
        b = item["boxes"].clone()
        b[:, 0::2] = ((b[:, 0::2] - left).clamp(0, w)) * sx
        b[:, 1::2] = ((b[:, 1::2] - top).clamp(0, h)) * sy
        item["boxes"] = b
    if "alpha" in item and item["alpha"].shape[0] > 0:
        item["alpha"] = resize(item["alpha"][:, None, top : top + h, left : left + w], size)[:, 0]


class RandomHorizontalFlip:
    """Flip with probability ``p``; on items also swap ``swap_words`` in the caption and mirror metadata.

    Items: ``image`` and ``alpha`` are mirrored, boxes become ``(W - x1, y0, W - x0, y1)``, the
    caption (a ``str`` or a list of ``str``) has each word pair of ``swap_words`` exchanged, and
    a built-in ``scene`` is replaced by :meth:`~maskmm.data.scenes.Scene.mirrored` (whose caption
    equals the swapped caption). Plain tensors are only flipped.
    """

    def __init__(self, p: float = 0.5, swap_words: Sequence[tuple[str, str]] = LEFT_RIGHT) -> None:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.swap_words = tuple(tuple(pair) for pair in swap_words)

    def __call__(self, x, generator: torch.Generator | None = None):
        check_generator("generator", generator, torch.device("cpu"))
        flip = bool(torch.rand(1, generator=generator) < self.p)
        if not flip:
            return x
        if not _is_item(x):
            return hflip(x)
        item = dict(x)
        W = item["image"].shape[-1]
        item["image"] = hflip(item["image"])
        cap = item.get("caption")
        if isinstance(cap, str):
            item["caption"] = swap_words(cap, self.swap_words)
        elif isinstance(cap, list):
            item["caption"] = [swap_words(c, self.swap_words) for c in cap]
        if "boxes" in item:
            b = item["boxes"]
            item["boxes"] = torch.stack([W - b[:, 2], b[:, 1], W - b[:, 0], b[:, 3]], dim=1)
        if "alpha" in item:
            item["alpha"] = item["alpha"].flip(-1)
        if "scene" in item and hasattr(item["scene"], "mirrored"):
            item["scene"] = item["scene"].mirrored()
        return item


class Normalize:
    """Per-channel ``(image - mean) / std`` (default ImageNet constants; CLIP ones are exported too)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        if len(mean) != len(std) or any(float(s) <= 0 for s in std):
            raise ValueError(f"mean and std must have equal length and std > 0, got {mean} and {std}")
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, x, generator: torch.Generator | None = None):
        if not _is_item(x):
            return normalize(x, self.mean, self.std)
        item = dict(x)
        item["image"] = normalize(item["image"], self.mean, self.std)
        return item


def named_normalize(name: str) -> Normalize | None:
    """The per-channel normalisation called ``name``: ``"imagenet"``, ``"clip"`` or ``"none"`` (``None``)."""
    if name == "none":
        return None
    if name == "clip":
        return Normalize(CLIP_MEAN, CLIP_STD)
    if name == "imagenet":
        return Normalize(IMAGENET_MEAN, IMAGENET_STD)
    raise ValueError(f"normalisation must be 'imagenet', 'clip' or 'none', got {name!r}")
