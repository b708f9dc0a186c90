from __future__ import annotations

import os

import pytest
import torch
from mamo_helpers import SMALL_MODEL
from maskmm.models.mamo.config import load_config
from spawn_helpers import free_port, run_ranks

from maskmm.training import Trainer

pytestmark = pytest.mark.distributed

SETS = [
    *SMALL_MODEL,
    "model.fusion_depth=1",  # overrides SMALL_MODEL's 2 (later overrides win)
    "losses.mrm_top_k=1",
    "itc.queue_size=8",
    "losses.itm=false",
    "losses.mlm=false",
    "losses.mrm=false",
    "losses.mim=false",
    "train.batch_size=4",
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


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    tr = Trainer("mamo", load_config("tiny", [*SETS, f"train.out_dir={out}"]), device="cpu", log=False)
    tr.fit(progress=False)
    torch.save({k: v for k, v in tr.model.state_dict().items() if "queue" not in k}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_process_gloo_step_equals_single_process(tmp_path, monkeypatch):
    """ITC with features gathered across 2 ranks + DDP gradient averaging == one process on the
    concatenated batch: identical student, temperature and teacher after one step."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    single = Trainer(
        "mamo", load_config("tiny", [*SETS, f"train.out_dir={tmp_path}"]), device="cpu", log=False
    )
    single.fit(progress=False)
    ref = {k: v for k, v in single.model.state_dict().items() if "queue" not in k}
    run_ranks(_worker, (free_port(), str(tmp_path)))
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got.keys() == ref.keys()
        for k, v in ref.items():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                assert torch.allclose(got[k], v, atol=2e-6, rtol=1e-5), k
    # the step did change the weights (the comparison is not vacuous)
    init = Trainer("mamo", load_config("tiny", [*SETS, f"train.out_dir={tmp_path}"]), device="cpu", log=False)
    w = "student.vision.blocks.0.attn.qkv.weight"
    assert not torch.equal(init.model.state_dict()[w], ref[w])


# ---------------------------------------------------------------------------- the whole MAMO step

_OFF = ("losses.itm=", "losses.mlm=", "losses.mrm=", "losses.mim=", "train.batch_size=")
ALL_LOSSES = [
    *(x for x in SETS if not x.startswith(_OFF)),  # every loss on (tiny), default masking
    "itm.easy_steps=0",  # hard negatives from the (gathered) ITC similarities from the first step
    "itm.ramp_steps=0",
    "train.batch_size=8",  # 4 pairs per rank
    "data.train_size=16",
]
VARIANTS = {
    # merged fusion, tiny's dropped patches and online ITC keys (gathered with gradient)
    "merged": ["model.fusion=merged"],
    # ALBEF-style cross fusion (MRM on text only), mask tokens, momentum keys + queue, MLM distillation
    "cross": [
        "model.fusion=cross",
        "masking.mode=token",
        "itc.momentum_keys=true",
        "itc.queue_size=16",
        "losses.mlm_distill=true",
    ],
}


def _full_worker(rank: int, port: int, out: str, sets: list[str]) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    tr = Trainer("mamo", load_config("tiny", [*sets, f"train.out_dir={out}"]), device="cpu", log=False)
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


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_two_process_full_mamo_step_equals_single_process(tmp_path, monkeypatch, variant):
    """ITC + ITM (global hard negatives) + MLM + MRM + MIM with default masking: two gloo ranks of 4
    pairs == one process with the same config (batch 8: the ranks' pairs concatenated), for every
    floating state entry (student, teacher, temperature, queue) after one step. The ranks' captions
    have different padded lengths and different numbers of masked tokens, so padding to a common
    length, global-batch masking and global-count normalisation are all exercised."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    sets = [*ALL_LOSSES, *VARIANTS[variant], f"train.out_dir={tmp_path}"]
    single = Trainer("mamo", load_config("tiny", sets), device="cpu", log=False)
    init = {k: v.clone() for k, v in single.model.state_dict().items() if isinstance(v, torch.Tensor)}
    # the single run's first batch is the ranks' batches in rank order (the sampler deals each rank
    # a block of the global batch), so this compares a DDP run with the same run in one process
    ref_stats = single.train_step(single.next_batch())
    ref = single.model.state_dict()

    run_ranks(_full_worker, (free_port(), str(tmp_path), sets))
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    # the case is not trivial: the ranks' captions differ in padded length and masked-token count
    assert got[0]["text_len"] != got[1]["text_len"]
    assert not torch.equal(got[0]["stats"]["mask/text_masked"], got[1]["stats"]["mask/text_masked"])

    for rank in range(2):
        state = got[rank]["state"]
        assert state.keys() == ref.keys()
        for k, v in ref.items():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                assert torch.allclose(state[k], v, atol=2e-6, rtol=1e-5), (rank, k)
    # every loss is on and each rank's share averages to the single-process loss
    for name in ("itc", "itm", "mlm", "mrm", "mim"):
        mean = (got[0]["stats"][f"loss_{name}"] + got[1]["stats"][f"loss_{name}"]) / 2
        assert torch.allclose(mean, ref_stats[f"loss_{name}"], atol=1e-5, rtol=1e-5), name
    # the step changed the weights of every part that a loss trains (the comparison is not vacuous)
    for part in ("vision", "text", "fusion", "itm_head", "mlm_head", "mrm_head", "mim_decoder"):
        keys = [k for k in init if k.startswith(f"student.{part}.") and init[k].is_floating_point()]
        assert keys and any(not torch.equal(init[k], ref[k]) for k in keys), part
    assert any(k.startswith("teacher.") and not torch.equal(init[k], ref[k]) for k in init)
