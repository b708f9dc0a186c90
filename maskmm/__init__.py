"""maskmm: composable building blocks for masked multimodal pretraining.

Sub-packages (import what you need; nothing heavy is imported here):

- ``maskmm.masking``      joint image/text masking strategies
- ``maskmm.teachers``     EMA (momentum) teachers and decay schedules
- ``maskmm.targets``      latent, feature, pixel and prototype targets
- ``maskmm.losses``       masked-modeling, contrastive and matching losses
- ``maskmm.distributed``  gathers with explicit gradient semantics
- ``maskmm.attention``    one masked-attention op over several backends
- ``maskmm.nn``           encoders, fusion and heads
- ``maskmm.data``         built-in procedural data, real-data readers, tokenizers
- ``maskmm.kernels``      Triton kernels (installed from ``kernels/``)
- ``maskmm.models``       reference models (installed from ``models/``)
"""

__version__ = "0.1.0"
