"""Inference for trained MAMO runs: :class:`maskmm.training.Inference` (the same for every recipe)."""

from __future__ import annotations

from maskmm.training.inference import Encoded, Inference

#: A trained MAMO run (any recipe's run loads the same way).
MAMOInference = Inference

__all__ = ["Encoded", "MAMOInference"]
