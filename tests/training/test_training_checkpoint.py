from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from maskmm.training import (
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def test_save_load_roundtrip_and_atomic(tmp_path):
    state = {"w": torch.randn(3, 5), "step": 7, "nested": {"a": [1, 2.5]}}
    path = save_checkpoint(state, tmp_path / "ck" / "step_7.pt")
    got = load_checkpoint(path)
    assert torch.equal(got["w"], state["w"]) and got["step"] == 7 and got["nested"] == {"a": [1, 2.5]}
    assert not [p for p in os.listdir(path.parent) if p.endswith(".tmp")]


def test_save_failure_keeps_previous_file(tmp_path):
    path = tmp_path / "step_1.pt"
    save_checkpoint({"v": torch.ones(2)}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint({"v": Boom()}, path)
    assert torch.equal(load_checkpoint(path)["v"], torch.ones(2))
    assert sorted(os.listdir(tmp_path)) == ["step_1.pt", "step_1.pt.sha256"]


def test_latest_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "missing") is None
    for s in (5, 40, 12):
        save_checkpoint({"s": s}, tmp_path / f"step_{s}.pt")
    (tmp_path / "step_x.pt").write_text("junk")
    assert latest_checkpoint(tmp_path).name == "step_40.pt"


def test_load_missing_raises(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_rng_state_roundtrip_through_file(tmp_path):
    g = torch.Generator().manual_seed(3)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(4)
    st = capture_rng_state({"data": g})
    save_checkpoint({"rng": st}, tmp_path / "r.pt")
    first = (random.random(), np.random.rand(), torch.rand(3), torch.rand(2, generator=g))
    restore_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"], {"data": g})
    second = (random.random(), np.random.rand(), torch.rand(3), torch.rand(2, generator=g))
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2]) and torch.equal(first[3], second[3])
