"""The trainer under faults, in one process: non-finite steps, foreign run folders, damaged checkpoints,
settings changed on resume, late configuration errors and failed saves (each test fails on a trainer
without the matching safeguard)."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from mamo_helpers import SMALL_MODEL
from maskmm.models.mamo import recipe as recipe_module
from maskmm.models.mamo.config import load_config

from maskmm.training import (
    CheckpointIntegrityWarning,
    CheckpointSaveError,
    NonFiniteError,
    Trainer,
    checkpoint_record_path,
    load_checkpoint,
    read_metrics,
)
from maskmm.training.cli import train_main

RUN = [
    *SMALL_MODEL,
    "model.mlp_ratio=2.0",
    "itc.queue_size=8",
    "losses.mim_decoder_depth=0",
    "train.batch_size=4",
    "train.steps=4",
    "train.log_every=1",
    "train.save_every=2",
    "data.train_size=64",
    "optim.warmup_steps=1",
    "log.progress=false",
    "log.plot=false",
]


def _cfg(out, *extra):
    return load_config("tiny", [*RUN, f"train.out_dir={out}", *extra])


def _fit(out, *extra, **kwargs):
    trainer = Trainer("mamo", _cfg(out, *extra), device="cpu", **kwargs)
    try:
        return trainer, trainer.fit()
    finally:
        trainer.close()


def _all_finite(state):
    tensors = [v for v in state.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    return len(tensors) > 0 and all(torch.isfinite(v).all() for v in tensors)


# ----------------------------------------------------------------------------- 1. non-finite steps


def test_a_non_finite_batch_is_skipped_counted_and_leaves_no_trace(tmp_path, monkeypatch):
    trainer = Trainer("mamo", _cfg(tmp_path), device="cpu")
    real_next = trainer.next_batch
    before = {}

    def poisoned():
        batch = real_next()
        if trainer.step == 2:  # the third step sees one +inf pixel
            batch["images"][1, 0, 3, 3] = float("inf")
            # the student, the temperature and the queue; the teacher may move towards the student
            before.update(
                {
                    k: v.clone()
                    for k, v in trainer.model.state_dict().items()
                    if isinstance(v, torch.Tensor) and not k.startswith("teacher.module.")
                }
            )
            before["opt"] = [s["exp_avg"].clone() for s in trainer.optimizer.state.values()]
        return batch

    monkeypatch.setattr(trainer, "next_batch", poisoned)
    steps_seen = []
    real_step = trainer.train_step

    def step_and_check(batch):
        stats = real_step(batch)
        steps_seen.append(trainer.step)
        if trainer.step == 3:  # the poisoned step changed neither weights, teacher, queue nor optimiser
            after = trainer.model.state_dict()
            assert len(before) > 70 and any("queue" in k for k in before)
            assert all(torch.equal(after[k], before[k]) for k in before if k != "opt")
            opt = [s["exp_avg"] for s in trainer.optimizer.state.values()]
            assert all(torch.equal(a, b) for a, b in zip(opt, before["opt"]))
        return stats

    monkeypatch.setattr(trainer, "train_step", step_and_check)
    res = trainer.fit()
    trainer.close()
    assert steps_seen == [1, 2, 3, 4] and res.step == 4
    rows = [r for r in res.history if "loss" in r]
    assert [r["nonfinite_steps"] for r in rows] == [0.0, 0.0, 1.0, 1.0]
    assert torch.isfinite(torch.tensor(rows[-1]["loss"]))
    for name in ("step_2.pt", "step_4.pt", "model.pt"):
        assert _all_finite(load_checkpoint(tmp_path / name)["model"]), name
    logged = read_metrics(tmp_path / "metrics.jsonl")
    assert logged[-1]["nonfinite_steps"] == 1.0


def test_diverging_run_stops_with_a_message_and_writes_no_poisoned_checkpoint(tmp_path, capsys):
    sets = [x for o in RUN for x in ("--set", o)]
    code = train_main(
        [
            *sets,
            "--set",
            "optim.lr=1e6",
            "--set",
            "train.steps=40",
            "--set",
            "train.save_every=1",
            "--set",
            "train.max_nonfinite_steps=3",
            "--out-dir",
            str(tmp_path),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1, err
    assert "non-finite" in err and "train.max_nonfinite_steps" in err
    written = sorted(tmp_path.glob("step_*.pt"))
    assert not (tmp_path / "model.pt").exists()
    for path in written:
        state = load_checkpoint(path)
        assert _all_finite(state["model"]), path
        for slots in state["optimizer"]["state"].values():
            assert _all_finite(slots), path


@pytest.mark.parametrize(
    "override", ["optim.lr=inf", "optim.eps=.inf", "losses.itc_weight=nan", "optim.clip_grad=nan"]
)
def test_config_refuses_non_finite_numbers(override):
    field = override.split("=")[0]
    with pytest.raises(ValueError, match=rf"'{field}' must be a finite number"):
        load_config("tiny", [override])


# ----------------------------------------------------------------------------- 2. one run per folder


def test_a_new_run_refuses_an_old_runs_folder_and_overwrite_replaces_it(tmp_path):
    _fit(tmp_path, "train.seed=1")
    old = {p.name for p in tmp_path.iterdir()}
    assert {"step_2.pt", "step_4.pt", "config.yaml", "metrics.jsonl", "model.pt"} <= old
    with pytest.raises(ValueError, match="already holds a run"):
        Trainer("mamo", _cfg(tmp_path, "train.steps=6", "train.save_every=3"), device="cpu")
    assert {p.name for p in tmp_path.iterdir()} == old  # nothing touched
    _, res = _fit(tmp_path, "train.steps=6", "train.save_every=3", overwrite=True)
    assert sorted(p.name for p in tmp_path.glob("step_*.pt")) == ["step_3.pt", "step_6.pt"]
    assert res.checkpoint == tmp_path / "step_6.pt" and res.checkpoint.is_file()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]


# ----------------------------------------------------------------------------- 3. damaged checkpoints


def test_resume_skips_a_damaged_newest_checkpoint_and_keeps_metrics_unique(tmp_path):
    _, ref = _fit(tmp_path / "ref")
    run = tmp_path / "run"
    _fit(run)
    (run / "step_4.pt").write_bytes((run / "step_4.pt").read_bytes()[:1000])  # truncated
    (run / ".step_4.pt.abcd1234.tmp").write_bytes(b"leftover of a killed save")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = Trainer("mamo", _cfg(run), device="cpu", resume=run)
    assert trainer.step == 2
    named = [str(w.message) for w in caught if issubclass(w.category, CheckpointIntegrityWarning)]
    assert any("step_4.pt" in m for m in named), named
    assert not (run / ".step_4.pt.abcd1234.tmp").exists()
    res = trainer.fit()
    trainer.close()
    losses = [(r["step"], r["loss"]) for r in res.history if "loss" in r]
    assert losses == [(r["step"], r["loss"]) for r in ref.history if "loss" in r][2:]
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3, 4]


# ----------------------------------------------------------------------------- 5. resume settings


def test_resume_applies_a_new_learning_rate_and_refuses_what_it_cannot_honour(tmp_path):
    _fit(tmp_path, "train.steps=2")
    trainer = Trainer("mamo", _cfg(tmp_path, "optim.lr=3e-3"), device="cpu", resume=tmp_path / "step_2.pt")
    lam = trainer.scheduler.lr_lambdas[0](trainer.scheduler.last_epoch)
    assert trainer.scheduler.base_lrs[0] == pytest.approx(3e-3)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(3e-3 * lam)
    trainer.fit()
    trainer.close()
    for change in ("train.batch_size=8", "train.seed=5", "model.fusion_depth=3"):
        field = change.split("=")[0]
        with pytest.raises(ValueError, match=rf"cannot change when resuming.*{field}"):
            Trainer("mamo", _cfg(tmp_path, change), device="cpu", resume=tmp_path)


def test_cli_resume_writes_where_it_resumed_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "elsewhere"
    sets = [x for o in RUN for x in ("--set", o)]
    assert train_main([*sets, "--set", "train.steps=2", "--out-dir", str(run), "--quiet"]) == 0
    assert train_main([*sets, "--resume", str(run), "--quiet"]) == 0
    assert not (tmp_path / "runs").exists()
    assert (run / "step_4.pt").is_file()
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3, 4]


# ----------------------------------------------------------------------------- 9. early errors


def _no_model(*args, **kwargs):
    raise AssertionError("the model was built before the configuration error was found")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_device_without_cuda_is_refused_before_building(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(recipe_module, "build_model", _no_model)
    sets = [x for o in RUN for x in ("--set", o)]
    with pytest.raises(SystemExit) as exc:
        train_main([*sets, "--set", "train.device=cuda", "--out-dir", str(tmp_path), "--quiet"])
    assert exc.value.code == 2
    assert "train.device = 'cuda' but CUDA is not available" in capsys.readouterr().err


def test_unusable_out_dir_is_refused_before_building(tmp_path, monkeypatch):
    monkeypatch.setattr(recipe_module, "build_model", _no_model)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=r"train.out_dir = .* is not a folder"):
        Trainer("mamo", _cfg(a_file), device="cpu")
    with pytest.raises(ValueError, match=r"train.out_dir = .* is not writable"):
        Trainer("mamo", _cfg("/proc/maskmm-no-such-run"), device="cpu")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to simulate a full disk")
def test_disk_full_during_a_save_is_reported_and_keeps_older_checkpoints(tmp_path, monkeypatch, capsys):
    import tempfile

    real = tempfile.mkstemp
    calls = {"n": 0}

    def full_after_first(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 2:  # step_2.pt and its record go through; the next save hits a full disk
            os.close(fd)
            return os.open("/dev/full", os.O_WRONLY), name
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", full_after_first)
    sets = [x for o in RUN for x in ("--set", o)]
    assert train_main([*sets, "--out-dir", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and str(tmp_path) in err
    assert load_checkpoint(tmp_path / "step_2.pt")["step"] == 2
    assert checkpoint_record_path(tmp_path / "step_2.pt").is_file()
    assert not list(tmp_path.glob(".*.tmp"))


def test_save_error_type_is_an_oserror():
    assert issubclass(CheckpointSaveError, OSError) and issubclass(NonFiniteError, RuntimeError)
