"""Masked attention kernels (importable as ``maskmm.kernels.attention``).

- :func:`attention_reference`: the one plain-PyTorch definition of masked attention that
  tests, CPU execution and the dispatcher's ``reference`` backend use.
- :func:`flash_attention` / :func:`flash_attention_varlen`: the fused Triton kernel
  (forward and backward) for padded and packed layouts.
- :func:`attention_dropout_mask`: the kernel's dropout keep-mask for a seed, materialised.
- :func:`triton_unsupported_reasons`: why the kernel cannot take some inputs (empty = it can).

Importing this package never imports Triton; the kernels load on first use. On CPU they
run only under ``TRITON_INTERPRET=1`` (set before ``triton`` is first imported).
"""

from ._validate import triton_unsupported_reasons
from .flash import attention_dropout_mask, flash_attention, flash_attention_varlen
from .reference import attention_reference

__all__ = [
    "attention_dropout_mask",
    "attention_reference",
    "flash_attention",
    "flash_attention_varlen",
    "triton_unsupported_reasons",
]
