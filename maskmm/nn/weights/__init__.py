"""Pretrained-weight import from local checkpoints (never downloads).

- :func:`import_bert`: Hugging Face BERT -> text encoder, fusion encoder, masked-token head.
- :func:`import_vit`: ViT / DeiT in the timm or Hugging Face layout -> :class:`~maskmm.nn.VisionTransformer`.
- :func:`load_state_dict`: read a local file or folder (safetensors or ``torch.load(weights_only=True)``).
"""

from .hf_bert import bert_layer_count, import_bert
from .io import LoadReport, apply_weights, load_state_dict, read_source
from .vit_import import detect_vit_layout, import_vit

__all__ = [
    "LoadReport",
    "apply_weights",
    "bert_layer_count",
    "detect_vit_layout",
    "import_bert",
    "import_vit",
    "load_state_dict",
    "read_source",
]
