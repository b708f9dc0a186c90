"""Attention backends of :func:`maskmm.attention.masked_attention`, by name."""

from __future__ import annotations

from .base import AttentionBackend
from .flex import FlexBackend
from .reference import ReferenceBackend
from .sdpa import SdpaBackend
from .triton import TritonBackend
from .xformers import XformersBackend

__all__ = ["BACKENDS", "AttentionBackend"]

BACKENDS: dict[str, AttentionBackend] = {
    "triton": TritonBackend(),
    "flex": FlexBackend(),
    "sdpa": SdpaBackend(),
    "xformers": XformersBackend(),
    "reference": ReferenceBackend(),
}
