"""Image decoding for the real-data readers (Pillow, imported lazily)."""

from __future__ import annotations

import io
import os

import torch

from .transforms import Resize, pil_to_tensor

__all__ = ["DECODE_ERRORS", "decode_image", "fit_image"]


def _pil():
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading image files needs Pillow: pip install pillow (or maskmm[data])") from e
    return Image


def _decode_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError)
    try:
        from PIL import Image

        errors = (*errors, Image.DecompressionBombError)
    except ImportError:  # pragma: no cover
        pass
    return errors


#: Exceptions that mark an image as undecodable (the record is skipped and counted).
DECODE_ERRORS = _decode_errors()


def decode_image(source: bytes | str | os.PathLike) -> torch.Tensor:
    """Decode an image file or its bytes to ``float32 [3, H, W]`` in ``[0, 1]``.

    Raises one of :data:`DECODE_ERRORS` when the data is missing, truncated or not an image.
    """
    Image = _pil()
    data = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    with Image.open(data) as img:
        img.load()
        return pil_to_tensor(img)


def fit_image(item: dict, size: tuple[int, int] | None) -> dict:
    """Resize ``item``'s image (and boxes) to ``size`` ``(height, width)`` unless it already has it."""
    if size is None or tuple(item["image"].shape[-2:]) == tuple(size):
        return item
    return Resize(size)(item)
