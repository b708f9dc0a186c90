"""MaskVLM and SemMIM under data parallelism: one step on two gloo ranks equals one process on the
concatenated batch (every loss on, the draws made for the global batch)."""

from __future__ import annotations

import pytest
from recipe_helpers import DDP, RUN, check_ddp_step_equals_single_process

pytestmark = pytest.mark.distributed

CASES = {
    # ITC (online keys gathered with gradient), ITM (global hard negatives), MLM and MIM (pixel blocks
    # and text masks drawn for the global batch)
    "maskvlm": ([], ("itc", "itm", "mlm", "mim")),
    # ITC (momentum keys, queue, distillation), ITM, text-guided masking drawn for the global batch,
    # code losses with centres of the global batch, MLM
    "semmim": (
        [
            "codes.num_codes=16",
            "codes.dim=16",
            "codes.hidden_dim=32",
            "losses.mlm=true",
            "itc.momentum_keys=true",
            "itc.queue_size=16",
            "itc.alpha_warmup_steps=0",
        ],
        ("itc", "itm", "mlm", "mim", "global_codes"),
    ),
}


@pytest.mark.parametrize("recipe", sorted(CASES))
def test_two_process_gloo_step_equals_single_process(recipe, tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    sets, losses = CASES[recipe]
    check_ddp_step_equals_single_process(recipe, tmp_path, [*RUN, *DDP, *sets], losses)
