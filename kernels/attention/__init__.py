"""Masked attention kernels (importable as ``maskmm.kernels.attention``).

``reference`` holds the one plain-PyTorch definition of masked attention that
tests, CPU execution and the dispatcher's ``reference`` backend use.
"""

from .reference import attention_reference

__all__ = ["attention_reference"]
