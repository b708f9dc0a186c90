"""The trainer as a real process under signals: SIGTERM/SIGINT save and exit 128 + signal, a second
signal exits at once, DDP ranks stop together, a frozen rank fails the job after the collective
timeout, and a run killed with SIGKILL at random points ends bit-identical to an uninterrupted one.

Every child process is bounded in time and killed at the end of its test.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mamo_helpers import SMALL_MODEL
from spawn_helpers import free_port

from maskmm.training import clean_stale_temporaries, latest_intact_checkpoint, load_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")]

RUN = [
    *SMALL_MODEL,
    "model.mlp_ratio=2.0",
    "itc.queue_size=8",
    "losses.mim_decoder_depth=0",
    "train.batch_size=4",
    "train.log_every=1",
    "train.threads=1",
    "data.train_size=64",
    "optim.warmup_steps=1",
    "log.progress=false",
    "log.plot=false",
]


def _cmd(out: Path, *overrides: str, extra: tuple[str, ...] = ()) -> list[str]:
    sets = [x for o in (*RUN, *overrides) for x in ("--set", o)]
    return [sys.executable, "-m", "maskmm.training.cli", *sets, "--out-dir", str(out), "--quiet", *extra]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def _rows(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):  # a killed writer can leave a partial last line
            rows.append(json.loads(line))
    return rows


def _wait_for_rows(out: Path, n: int, procs: list[subprocess.Popen], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while len([r for r in _rows(out) if "loss" in r]) < n:
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"the run ended early ({p.returncode}): {p.stderr.read() if p.stderr else ''}")
        if time.monotonic() > deadline:
            pytest.fail(f"the run logged fewer than {n} steps within {timeout:g} s")
        time.sleep(0.1)


def _finish(p: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
        pytest.fail(f"the process did not exit within {timeout:g} s: {err}")
    return p.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_the_step_saves_and_exits_with_128_plus_signal(tmp_path, sig):
    out = tmp_path / "run"
    p = subprocess.Popen(
        _cmd(out, "train.steps=100000"), env=_env(), stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        _wait_for_rows(out, 3, [p])
        p.send_signal(sig)
        code, err = _finish(p)
    finally:
        p.kill()
    assert code == 128 + sig, err
    assert f"{sig.name} received" in err and f"stopped by {sig.name} after step" in err
    ckpt = latest_intact_checkpoint(out)
    assert ckpt is not None, err
    step = load_checkpoint(ckpt)["step"]
    assert step >= 3 and f"after step {step}:" in err
    assert [r["step"] for r in _rows(out)] == list(range(1, step + 1))
    # the saved run continues (a longer horizon is a setting a resumed run may change)
    again = subprocess.run(
        _cmd(out, f"train.steps={step + 2}", extra=("--resume", str(out))),
        env=_env(),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=180,
    )
    assert again.returncode == 0, again.stderr
    assert [r["step"] for r in _rows(out)] == list(range(1, step + 3))


def test_a_second_signal_exits_at_once_without_damaging_checkpoints(tmp_path):
    out = tmp_path / "run"
    p = subprocess.Popen(
        _cmd(out, "train.steps=100000", "train.save_every=1"),
        env=_env(),
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        _wait_for_rows(out, 3, [p])
        p.send_signal(signal.SIGTERM)
        p.send_signal(signal.SIGTERM)
        code, err = _finish(p)
    finally:
        p.kill()
    assert code == 128 + signal.SIGTERM, err
    ckpt = latest_intact_checkpoint(out)
    assert ckpt is not None and load_checkpoint(ckpt)["step"] >= 2
    clean_stale_temporaries(out)
    assert not [q for q in out.iterdir() if q.name.endswith(".tmp")]


def _launch_ranks(out: Path, *overrides: str) -> list[subprocess.Popen]:
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = _env(
            RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port
        )
        procs.append(
            subprocess.Popen(
                _cmd(out, *overrides), env=env, stderr=subprocess.PIPE, text=True, cwd=out.parent
            )
        )
    return procs


@pytest.mark.distributed
def test_ddp_ranks_agree_to_stop_on_a_signal_to_one_rank(tmp_path):
    out = tmp_path / "run"
    procs = _launch_ranks(out, "train.steps=100000")
    try:
        _wait_for_rows(out, 3, procs)
        procs[1].send_signal(signal.SIGTERM)  # only rank 1 is told
        results = [_finish(p) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for code, err in results:
        assert code == 128 + signal.SIGTERM, err
    steps = {int(err.split("after step ")[1].split(":")[0]) for _, err in results}
    assert len(steps) == 1, [err for _, err in results]
    ckpt = latest_intact_checkpoint(out)
    assert ckpt is not None and load_checkpoint(ckpt)["step"] == steps.pop()


@pytest.mark.distributed
def test_a_frozen_rank_fails_the_job_after_the_collective_timeout(tmp_path):
    out = tmp_path / "run"
    procs = _launch_ranks(out, "train.steps=100000", "train.dist_timeout=5")
    try:
        _wait_for_rows(out, 2, procs)
        os.kill(procs[1].pid, signal.SIGSTOP)
        t0 = time.monotonic()
        code, err = _finish(procs[0], timeout=90)
        waited = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
            p.communicate()
    assert code != 0
    assert "train.dist_timeout = 5 s" in err and "step" in err, err[-2000:]
    assert waited < 60


def _final_state(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "model.pt", map_location="cpu", weights_only=True)["model"]


def test_kill9_soak_ends_bit_identical_to_the_uninterrupted_run(tmp_path):
    steps = 150  # more than 20 short lives can finish, so every kill lands in a live run
    common = (f"train.steps={steps}", "train.save_every=1")
    ref = subprocess.run(
        _cmd(tmp_path / "ref", *common), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "soak"
    rng = random.Random(0)
    kills = 0
    for _ in range(40):
        ckpt = latest_intact_checkpoint(out, warn=False)
        resume = ("--resume", str(out)) if ckpt else ("--overwrite",)
        logged = int(ckpt.stem.split("_")[1]) if ckpt else 0  # rows left after the resume truncates
        p = subprocess.Popen(_cmd(out, *common, extra=resume), env=_env(), stderr=subprocess.PIPE, text=True)
        # kill at a random point once this life trains (after startup, which a busy machine stretches)
        deadline = time.monotonic() + 180
        while p.poll() is None and len(_rows(out)) <= logged and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            p.wait(timeout=rng.uniform(0.0, 1.5))
        except subprocess.TimeoutExpired:
            p.kill()
            kills += 1
        p.communicate()
        if p.returncode == 0 or kills >= 20:
            break
    assert kills >= 20, f"only {kills} kills landed before the run finished"
    last = subprocess.run(
        _cmd(out, *common, extra=("--resume", str(out))),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert last.returncode == 0, last.stderr
    a, b = _final_state(tmp_path / "ref"), _final_state(out)
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
    assert [r["step"] for r in _rows(out) if "loss" in r] == list(range(1, steps + 1))
    assert not [q for q in out.iterdir() if q.name.endswith(".tmp")]
