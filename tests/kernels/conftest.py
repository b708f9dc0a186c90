"""Kernel tests run Triton through its CPU interpreter when there is no CUDA device.

``TRITON_INTERPRET`` must be set before ``triton`` is first imported; the top-level
conftest does the same, this keeps ``pytest tests/kernels`` self-contained.
"""

from __future__ import annotations

import os

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
