"""ITM of the tiny preset (cross-attention fusion) learns: with its init (Xavier) and its first
negatives (random), the matching head leaves the 1:2 class prior on a fixed batch of real pairs and
fits it."""

from __future__ import annotations

from mamo_helpers import SMALL_MODEL
from maskmm.models.mamo.config import load_config

from maskmm.training import Trainer

SETS = [
    *SMALL_MODEL,
    "losses.mlm=false",
    "losses.mrm=false",
    "losses.mim=false",
    "train.batch_size=16",
    "data.train_size=64",
    "optim.warmup_steps=0",
    "train.steps=400",
    "log.progress=false",
]


def test_itm_leaves_the_class_prior_on_a_fixed_batch(tmp_path):
    cfg = load_config("tiny", [*SETS, f"train.out_dir={tmp_path}"])
    assert cfg.model.init == "xavier" and cfg.itm.easy_steps >= 200  # what the preset relies on
    tr = Trainer("mamo", cfg, device="cpu", log=False)
    batch = tr.next_batch()
    assert batch["image_ids"].unique().numel() == 16  # every pair distinct: 16 positives, 32 negatives
    acc = []
    for _ in range(400):
        stats = tr.train_step(batch)
        acc.append(stats["itm/accuracy"].item())
    tr.close()
    assert max(acc[:20]) < 0.7  # starts at the prior (2/3: "no match" for every pair)
    assert min(acc[-20:]) >= 0.9, acc[-20:]  # and fits the batch, positives included
    assert stats["itm/pos_acc"].item() >= 0.9
