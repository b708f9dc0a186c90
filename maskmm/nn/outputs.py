"""Named outputs shared by the encoders and fusion modules."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["EncoderOutput", "FusionLayerState", "FusionOutput"]


class EncoderOutput(NamedTuple):
    """Output of a unimodal encoder.

    - ``last_hidden``: ``[B, L, D]`` final states (after the final norm, where there is one).
    - ``hidden_states``: outputs of the blocks named in ``return_layers``, in the order asked,
      each ``[B, L, D]`` (block outputs, before any final norm); ``()`` when none were asked.
    - ``valid``: ``bool [B, L]`` validity of ``last_hidden``'s tokens (``True`` = real token),
      or ``None`` when every token is valid.
    """

    last_hidden: Tensor
    hidden_states: tuple[Tensor, ...]
    valid: Tensor | None


class FusionLayerState(NamedTuple):
    """States of one fusion layer: ``text [B, Lt, D]`` and ``image [B, Li, D]`` (``None`` when the
    fusion does not update image tokens)."""

    text: Tensor
    image: Tensor | None


class FusionOutput(NamedTuple):
    """Output of a fusion encoder.

    - ``text``: ``[B, Lt, D]`` final text states.
    - ``image``: ``[B, Li, D]`` final image states (merged and co-attention fusion), ``None``
      for cross-attention fusion, which updates text tokens only.
    - ``hidden_states``: one :class:`FusionLayerState` per layer named in ``return_layers``.
    """

    text: Tensor
    image: Tensor | None
    hidden_states: tuple[FusionLayerState, ...]
