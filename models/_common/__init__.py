"""Pieces every recipe repeats, written once (``maskmm.models._common``).

- :class:`LossSwitches`: the loss switches and weights of a recipe config dataclass;
  :func:`check_switch_fields`, :func:`check_text_masking_fields` and the ``check_*_field`` helpers
  validate config fields with messages naming ``<ConfigClass>.<field>``.
- :func:`check_pair_batch`: the argument checks of a pretraining step on image-caption pairs.
- :func:`itc_similarity` and :func:`fused_text_cls`: the similarities and the pair encoder of
  :func:`maskmm.losses.hard_negative_matching` (ALBEF's ITM); :func:`itm_step` puts them together.
- :func:`check_required_parts`: each enabled loss has the parts it needs; :class:`PartsContainer`:
  the base of the recipes' student containers.
- :class:`StepLosses`: the named losses and statistics of one step and their weighted total.
- :func:`preset_encoders` and :func:`token_masker`: builder steps shared by the recipes.
"""

from .builders import preset_encoders, token_masker
from .config_checks import (
    LossSwitches,
    check_float_field,
    check_int_field,
    check_ratio_field,
    check_switch_fields,
    check_text_masking_fields,
)
from .step import (
    PartsContainer,
    StepLosses,
    check_pair_batch,
    check_required_parts,
    fused_text_cls,
    itc_similarity,
    itm_step,
)

__all__ = [
    "LossSwitches",
    "PartsContainer",
    "StepLosses",
    "check_float_field",
    "check_int_field",
    "check_pair_batch",
    "check_ratio_field",
    "check_required_parts",
    "check_switch_fields",
    "check_text_masking_fields",
    "fused_text_cls",
    "itc_similarity",
    "itm_step",
    "preset_encoders",
    "token_masker",
]
