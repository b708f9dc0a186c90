"""Triton kernels of maskmm (importable as ``maskmm.kernels``).

Each op comes in three layers: a ``@triton.jit`` kernel, a launcher that
checks inputs and picks block sizes, and a ``torch.autograd.Function``; each
has a plain-PyTorch reference beside it. Importing this package never imports
Triton: kernels are loaded when first used.
"""
