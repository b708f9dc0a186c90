"""Image transforms for real photographs, per split, with Pillow (no torchvision).

- :class:`TrainImageTransform`: ``RandomResizedCrop(size, scale=(scale_min, 1))`` + horizontal flip
  (+ optional :class:`RandAugment`), ALBEF's pretraining recipe.
- :class:`EvalImageTransform`: resize the shorter side to ``size`` and take the centre crop (or squash
  to ``size`` with ``crop=False``, ALBEF's evaluation resize).

Both are item transforms ``t(item, generator=None) -> item`` like those of
:mod:`maskmm.data.transforms` (they also take a bare image and return a tensor). ``item["image"]`` may be:

- encoded bytes or a file path: decoded here (``decodes_images = True``: the tar readers hand over
  the encoded image, so decoding, cropping and resizing happen in one pass on 8-bit data; JPEGs are
  decoded at a reduced scale by Pillow's ``draft`` when the crop is at least twice the output size);
- a ``PIL.Image``;
- a ``float [3, H, W]`` tensor in ``[0, 1]`` (what :class:`~maskmm.data.JsonCaptionDataset` decodes): it is
  converted to 8-bit first (exact for images read from 8-bit files).

The output is ``float32 [3, size, size]`` in ``[0, 1]``, normalised when ``mean``/``std`` are given.
Random draws use ``generator`` (a CPU ``torch.Generator``, e.g. from
:func:`~maskmm.data.item_generator`) or the global RNG. Undecodable images raise
:class:`UndecodableImage` (an ``OSError``), which the readers count as ``"bad_image"``.

Flips do not change the caption (ALBEF's choice: a real caption's "left" is often not a direction);
the built-in data's :class:`~maskmm.data.RandomHorizontalFlip` swaps the words instead.

Why not torchvision's transforms v2: the torchvision release built for this torch (0.28.0 for torch
2.13.0) is published as a CUDA build only and does not import with the CPU build of torch, so these
few operations are written with Pillow, which every real-data path needs anyway.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .._checks import check_generator
from .images import DECODE_ERRORS
from .transforms import _size2, random_resized_crop_params

__all__ = [
    "RANDAUGMENT_OPS",
    "EvalImageTransform",
    "RandAugment",
    "TrainImageTransform",
    "UndecodableImage",
]


class UndecodableImage(OSError):
    """An image that cannot be decoded (missing, truncated or not an image)."""


def _pil():
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("real-image transforms need Pillow: pip install pillow (or maskmm[data])") from e
    return Image


def _open(image: object):
    """``(PIL image not yet converted, encoded)``; ``encoded`` tells whether ``draft`` may apply."""
    Image = _pil()
    if isinstance(image, Image.Image):
        return image, False
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise TypeError(f"image tensors must be float [3, H, W] in [0, 1], got {list(image.shape)}")
        arr = image.detach().clamp(0, 1).mul(255).round_().to(torch.uint8).permute(1, 2, 0).numpy()
        return Image.fromarray(np.ascontiguousarray(arr), "RGB"), False
    if isinstance(image, (bytes, bytearray, memoryview)):
        source: object = io.BytesIO(bytes(image))
    elif isinstance(image, (str, os.PathLike)):
        source = os.fspath(image)
    else:
        raise TypeError(
            f"image must be encoded bytes, a path, a PIL image or a float tensor, got {type(image).__name__}"
        )
    try:
        return Image.open(source), True
    except DECODE_ERRORS as e:
        raise UndecodableImage(f"cannot decode image: {e}") from e


def _rgb(img, encoded: bool):
    try:
        if encoded:
            img.load()
        return img if img.mode == "RGB" else img.convert("RGB")
    except DECODE_ERRORS as e:
        raise UndecodableImage(f"cannot decode image: {e}") from e


def _draft(img, box: tuple[float, float, float, float], out: tuple[int, int]):
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when ``box`` keeps at least the ``out`` (w, h)
    resolution; returns ``box`` in the coordinates of the image as it will decode."""
    if getattr(img, "format", None) != "JPEG":
        return box
    W0, H0 = img.size
    bw, bh = box[2] - box[0], box[3] - box[1]
    k = next((k for k in (8, 4, 2) if bw / k >= out[0] and bh / k >= out[1]), 1)
    if k == 1:
        return box
    img.draft(None, (max(1, W0 // k), max(1, H0 // k)))
    sx, sy = W0 / img.size[0], H0 / img.size[1]
    return (box[0] / sx, box[1] / sy, box[2] / sx, box[3] / sy)


def _to_tensor(img, mean: torch.Tensor | None, std: torch.Tensor | None) -> torch.Tensor:
    hwc = torch.from_numpy(np.array(img, dtype=np.uint8))  # a writable copy (asarray: read-only)
    x = torch.empty((3, *hwc.shape[:2]), dtype=torch.float32)
    x.copy_(hwc.permute(2, 0, 1)).div_(255.0)  # one pass: to float and channels first
    if mean is not None:
        x = x.sub_(mean).div_(std)
    return x


def _mean_std(mean: Sequence[float] | None, std: Sequence[float] | None):
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    if mean is None:
        return None, None
    if len(mean) != 3 or len(std) != 3 or any(float(s) <= 0 for s in std):
        raise ValueError(f"mean and std need 3 entries each and std > 0, got {mean} and {std}")
    return (
        torch.tensor([float(m) for m in mean]).view(3, 1, 1),
        torch.tensor([float(s) for s in std]).view(3, 1, 1),
    )


#: RandAugment's operations here: ALBEF's list. Colour-changing ones (colour, solarise, posterise,
#: invert) are left out on purpose: captions name colours.
RANDAUGMENT_OPS: tuple[str, ...] = (
    "identity",
    "autocontrast",
    "equalize",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
)


class RandAugment:
    """``num_ops`` operations drawn uniformly (with replacement) from :data:`RANDAUGMENT_OPS`, each at
    ``magnitude`` in ``[0, 10]`` with a random sign: brightness/sharpness factor ``1 ± 0.9 m/10``, shear
    ``± 0.3 m/10``, translation ``± 0.45 m/10`` of the image size, rotation ``± 30 m/10`` degrees
    (torchvision's ranges; ALBEF uses 2 operations at magnitude 7). Works on ``PIL`` images; uncovered
    pixels are grey (128)."""

    def __init__(self, num_ops: int = 2, magnitude: float = 7, fill: int = 128) -> None:
        if isinstance(num_ops, bool) or not isinstance(num_ops, int) or num_ops < 1:
            raise ValueError(f"num_ops must be an int >= 1, got {num_ops!r}")
        if isinstance(magnitude, bool) or not isinstance(magnitude, (int, float)) or not 0 <= magnitude <= 10:
            raise ValueError(f"magnitude must lie in [0, 10], got {magnitude!r}")
        self.num_ops, self.magnitude, self.fill = num_ops, float(magnitude), (int(fill),) * 3

    def __call__(self, img, generator: torch.Generator | None = None):
        ops = torch.randint(len(RANDAUGMENT_OPS), (self.num_ops,), generator=generator).tolist()
        signs = (torch.rand(self.num_ops, generator=generator) < 0.5).tolist()
        for op, neg in zip(ops, signs):
            img = self.apply(img, RANDAUGMENT_OPS[op], -self.magnitude if neg else self.magnitude)
        return img

    def apply(self, img, op: str, magnitude: float):
        """One operation at a signed ``magnitude`` in ``[-10, 10]``."""
        from PIL import Image, ImageEnhance, ImageOps

        v = magnitude / 10.0
        W, H = img.size
        bilinear = Image.Resampling.BILINEAR
        if op == "identity":
            return img
        if op == "autocontrast":
            return ImageOps.autocontrast(img)
        if op == "equalize":
            return ImageOps.equalize(img)
        if op == "brightness":
            return ImageEnhance.Brightness(img).enhance(1.0 + 0.9 * v)
        if op == "sharpness":
            return ImageEnhance.Sharpness(img).enhance(1.0 + 0.9 * v)
        if op in ("shear_x", "shear_y", "translate_x", "translate_y"):
            s, t = 0.3 * v, 0.45 * v
            data = {  # output (x, y) reads input (a x + b y + c, d x + e y + f); shears about the centre
                "shear_x": (1, s, -s * H / 2, 0, 1, 0),
                "shear_y": (1, 0, 0, s, 1, -s * W / 2),
                "translate_x": (1, 0, t * W, 0, 1, 0),
                "translate_y": (1, 0, 0, 0, 1, t * H),
            }[op]
            affine = Image.Transform.AFFINE
            return img.transform(img.size, affine, data, resample=bilinear, fillcolor=self.fill)
        if op == "rotate":
            return img.rotate(30.0 * v, resample=bilinear, fillcolor=self.fill)
        raise ValueError(f"unknown RandAugment operation {op!r}; one of {RANDAUGMENT_OPS}")


class _ImageTransform:
    decodes_images = True

    def __init__(self, size, mean, std) -> None:
        h, w = _size2("size", size)
        self.size = (w, h)  # PIL's (width, height)
        self._mean, self._std = _mean_std(mean, std)

    def _image(self, image, generator) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x, generator: torch.Generator | None = None):
        check_generator("generator", generator, torch.device("cpu"))
        if isinstance(x, Mapping):
            item = dict(x)
            item["image"] = self._image(item["image"], generator)
            return item
        return self._image(x, generator)


class TrainImageTransform(_ImageTransform):
    """Pretraining: random resized crop (area fraction ``scale``, aspect ``ratio``) to ``size`` with
    bicubic resampling, horizontal flip with probability ``flip`` (the caption is kept), then
    :class:`RandAugment` when ``randaugment`` is given; to ``float32 [3, size, size]``, normalised with
    ``mean``/``std`` when given. See the module notes for the accepted inputs."""

    def __init__(
        self,
        size: int | tuple[int, int],
        *,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: float = 0.5,
        randaugment: RandAugment | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(size, mean, std)
        random_resized_crop_params(8, 8, scale, ratio, torch.Generator())  # validates scale and ratio
        if scale[1] > 1:
            raise ValueError(f"scale must lie in (0, 1], got {scale}")
        if isinstance(flip, bool) or not isinstance(flip, (int, float)) or not 0 <= flip <= 1:
            raise ValueError(f"flip must be a probability in [0, 1], got {flip!r}")
        if randaugment is not None and not callable(randaugment):
            raise TypeError(f"randaugment must be a RandAugment or None, got {type(randaugment).__name__}")
        self.scale, self.ratio, self.flip = tuple(scale), tuple(ratio), float(flip)
        self.randaugment = randaugment

    def _image(self, image, generator) -> torch.Tensor:
        Image = _pil()
        img, encoded = _open(image)
        W0, H0 = img.size
        top, left, h, w = random_resized_crop_params(H0, W0, self.scale, self.ratio, generator)
        box = (float(left), float(top), float(left + w), float(top + h))
        if encoded:
            box = _draft(img, box, self.size)
        img = _rgb(img, encoded)
        out = img.resize(self.size, Image.Resampling.BICUBIC, box=box)
        if bool(torch.rand(1, generator=generator) < self.flip):
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.randaugment is not None:
            out = self.randaugment(out, generator=generator)
        return _to_tensor(out, self._mean, self._std)


class EvalImageTransform(_ImageTransform):
    """Evaluation: the centred crop of ``size``'s aspect, as large as the image allows, resized to
    ``size`` (= resize the shorter side + centre crop for a square size); ``crop=False`` squashes the
    whole image to ``size`` instead. Bicubic; an image already of ``size`` is returned unchanged.
    Deterministic (``generator`` is ignored)."""

    def __init__(
        self,
        size: int | tuple[int, int],
        *,
        crop: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(size, mean, std)
        self.crop = bool(crop)

    def _box(self, W0: int, H0: int) -> tuple[float, float, float, float]:
        if not self.crop:
            return (0.0, 0.0, float(W0), float(H0))
        aspect = self.size[0] / self.size[1]
        bw, bh = (H0 * aspect, float(H0)) if aspect < W0 / H0 else (float(W0), W0 / aspect)
        x0, y0 = (W0 - bw) / 2, (H0 - bh) / 2
        return (x0, y0, x0 + bw, y0 + bh)

    def _image(self, image, generator) -> torch.Tensor:
        Image = _pil()
        img, encoded = _open(image)
        box = self._box(*img.size)
        if encoded:
            box = _draft(img, box, self.size)
        img = _rgb(img, encoded)
        if img.size == self.size and box == (0, 0, *self.size):
            out = img
        else:
            out = img.resize(self.size, Image.Resampling.BICUBIC, box=box)
        return _to_tensor(out, self._mean, self._std)
