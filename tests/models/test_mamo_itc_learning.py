"""ITC of the tiny preset learns: a contrastive-only model overfits one fixed batch of real pairs."""

from __future__ import annotations

import torch
from mamo_helpers import SMALL_MODEL
from maskmm.models.mamo.config import load_config

from maskmm.training import Trainer

SMALL = [
    *SMALL_MODEL,
    "losses.itm=false",
    "losses.mlm=false",
    "losses.mrm=false",
    "losses.mim=false",
    "train.batch_size=8",
    "data.train_size=64",
    "optim.warmup_steps=0",
    "train.steps=80",
    "log.progress=false",
]


def test_tiny_preset_queues_only_momentum_keys():
    # a queue of online (non-momentum) keys collapses the ITC features from scratch
    itc = load_config("tiny").itc
    assert itc.momentum_keys or itc.queue_size == 0


def test_contrastive_only_overfits_a_fixed_batch(tmp_path):
    tr = Trainer("mamo", load_config("tiny", [*SMALL, f"train.out_dir={tmp_path}"]), device="cpu", log=False)
    batch = tr.next_batch()
    assert batch["image_ids"].unique().numel() == batch["image_ids"].numel()  # distinct positives
    m = tr.model.student
    frozen = [n for n, p in m.named_parameters() if not p.requires_grad]
    assert all(n.startswith(("fusion.", "vision.mask_token")) for n in frozen), frozen
    before = {n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad}
    for _ in range(80):
        stats = tr.train_step(batch)
    tr.close()
    for prefix in ("vision.", "text.", "vision_proj.", "text_proj."):
        moved = [
            not torch.equal(p, before[n])
            for n, p in m.named_parameters()
            if n in before and n.startswith(prefix)
        ]
        assert moved and all(moved), prefix
    assert stats["itc/i2t_acc"].item() == 1.0
    assert stats["itc/t2i_acc"].item() == 1.0
