"""ALBEF and CLIP under data parallelism: one step on two gloo ranks equals one process on the
concatenated batch."""

from __future__ import annotations

import os

import pytest
import torch
from mamo_helpers import SMALL_MODEL
from spawn_helpers import free_port, run_ranks

from maskmm.training import Trainer
from maskmm.training.recipe import get_recipe

pytestmark = pytest.mark.distributed

COMMON = [
    *SMALL_MODEL,
    "model.fusion_depth=1",  # overrides SMALL_MODEL's 2 (later overrides win)
    "train.batch_size=8",  # 4 pairs per rank
    "train.steps=1",
    "data.train_size=16",
    "optim.warmup_steps=0",
    # eps >> |g|: the first AdamW update is ~ lr * g (not lr * sign(g), which would amplify
    # rounding noise in near-zero gradients to full-size differences)
    "optim.eps=1.0",
    "optim.lr=0.1",
    "log.progress=false",
    "log.plot=false",
]
SETS = {
    # the paper's ALBEF step: momentum ITC keys + queue + distillation (alpha 0.4 from step 0),
    # learnable temperature, hard ITM negatives from the gathered similarities, MLM distillation
    "albef": [
        *COMMON,
        "itc.momentum_keys=true",
        "itc.queue_size=16",
        "itc.learnable_temperature=true",
        "itc.alpha_warmup_steps=0",
        "itm.easy_steps=0",
        "itm.ramp_steps=0",
        "losses.mlm_distill=true",
    ],
    # online keys gathered with gradient, learnable logit scale
    "clip": [*COMMON, "itc.learnable_temperature=true"],
}
LOSSES = {"albef": ("itc", "itm", "mlm"), "clip": ("itc",)}


def _worker(rank: int, port: int, out: str, recipe: str, sets: list[str]) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    cfg = get_recipe(recipe).load_config("tiny", [*sets, f"train.out_dir={out}"])
    tr = Trainer(recipe, cfg, device="cpu", log=False)
    batch = tr.next_batch()
    stats = tr.train_step(batch)
    torch.save(
        {
            "state": tr.model.state_dict(),
            "stats": {k: v.detach().clone() for k, v in stats.items()},
            "text_len": batch["input_ids"].shape[1],
        },
        f"{out}/rank{rank}.pt",
    )
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("recipe", ["albef", "clip"])
def test_two_process_step_equals_single_process(tmp_path, monkeypatch, recipe):
    """One step on two gloo ranks of 4 pairs == one process on their 8 pairs (same config): every
    floating state entry (student, momentum model, temperature, queue) equal after the step, and
    the ranks' loss shares average to the single-process losses. The ranks' captions have different
    padded lengths (and, for ALBEF, different numbers of masked tokens), so padding to a common
    length, global-batch draws and global-count normalisation are all exercised."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    sets = [*SETS[recipe], f"train.out_dir={tmp_path}"]
    single = Trainer(recipe, get_recipe(recipe).load_config("tiny", sets), device="cpu", log=False)
    init = {k: v.clone() for k, v in single.model.state_dict().items() if isinstance(v, torch.Tensor)}
    # the single run's first batch is the ranks' batches in rank order
    ref_stats = single.train_step(single.next_batch())
    ref = single.model.state_dict()

    run_ranks(_worker, (free_port(), str(tmp_path), recipe, sets))
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    assert got[0]["text_len"] != got[1]["text_len"]
    if recipe == "albef":
        masked = [g["stats"]["mlm/masked_per_caption"] for g in got]
        assert not torch.equal(*masked)
    for rank in range(2):
        state = got[rank]["state"]
        assert state.keys() == ref.keys()
        for k, v in ref.items():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                assert torch.allclose(state[k], v, atol=2e-6, rtol=1e-5), (rank, k)
    for name in LOSSES[recipe]:
        mean = (got[0]["stats"][f"loss_{name}"] + got[1]["stats"][f"loss_{name}"]) / 2
        assert torch.allclose(mean, ref_stats[f"loss_{name}"], atol=1e-5, rtol=1e-5), name
    # the step changed every trained part, the temperature and (ALBEF) the momentum model
    parts = ("vision", "text", "vision_proj", "text_proj")
    if recipe == "albef":
        parts += ("fusion", "itm_head", "mlm_head")
    for part in parts:
        keys = [k for k in init if k.startswith(f"student.{part}.") and init[k].is_floating_point()]
        assert keys and any(not torch.equal(init[k], ref[k]) for k in keys), part
    temp = "itc.temp" if recipe == "albef" else "logit_scale"
    assert not torch.equal(init[temp], ref[temp])
    if recipe == "albef":
        assert any(k.startswith("teacher.") and not torch.equal(init[k], ref[k]) for k in init)
        assert ref["itc.queue.valid"].sum() == 8
