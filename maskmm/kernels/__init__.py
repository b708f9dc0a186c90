"""Triton kernels of maskmm.

The sources live in the repository's top-level ``kernels/`` folder; each of its sub-packages installs
here (``kernels/attention`` as ``maskmm.kernels.attention``). That folder has no ``__init__.py`` of its
own, so from a checkout it can never shadow an installed top-level package named ``kernels``.

Each op comes in three layers: a ``@triton.jit`` kernel, a launcher that checks inputs and picks block
sizes, and a ``torch.autograd.Function``; each has a plain-PyTorch reference beside it. Importing this
package never imports Triton: kernels are loaded when first used.
"""
