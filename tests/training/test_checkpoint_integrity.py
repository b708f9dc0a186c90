"""Integrity records, verification, safe resume discovery, cleanup, pruning and metrics truncation."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import multiprocessing
import os
import pickle
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import pytest
import torch

from maskmm.training import (
    CheckpointError,
    CheckpointIntegrityWarning,
    CheckpointSaveError,
    checkpoint_record_path,
    clean_stale_temporaries,
    latest_checkpoint,
    latest_intact_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    read_metrics,
    save_checkpoint,
    truncate_metrics,
    verify_checkpoint,
)

UNSAFE_ADVICE = "weights_only=False"


def _state(step: int, n: int = 65536) -> dict:
    g = torch.Generator().manual_seed(step)
    return {"step": step, "w": torch.randn(n, generator=g), "meta": {"lr": 0.1 * step, "ids": [1, 2, 3]}}


def _tmp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _no_warnings(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    assert not caught, [str(w.message) for w in caught]
    return out


# ----------------------------------------------------------------------------- round trip / format


def test_roundtrip_writes_a_matching_record(tmp_path):
    state = _state(3)
    path = save_checkpoint(state, tmp_path / "run" / "step_3.pt")
    rec = checkpoint_record_path(path)
    assert rec == tmp_path / "run" / "step_3.pt.sha256" and rec.is_file()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    text = rec.read_text()
    assert f"{digest}  step_3.pt\n" in text
    assert f"# bytes {path.stat().st_size} sha256 {digest}\n" in text
    _no_warnings(verify_checkpoint, path)
    got = _no_warnings(load_checkpoint, path)
    assert got["step"] == 3 and torch.equal(got["w"], state["w"]) and got["meta"] == state["meta"]
    assert _tmp_files(path.parent) == []
    if shutil.which("sha256sum"):  # the record is usable with standard tools
        r = subprocess.run(["sha256sum", "--strict", "-c", rec.name], cwd=rec.parent, capture_output=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_overwrite_keeps_a_single_digest_and_loads_the_new_state(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(_state(1), path)
    save_checkpoint(_state(2), path)
    lines = [ln for ln in checkpoint_record_path(path).read_text().splitlines() if not ln.startswith("#")]
    assert len(lines) == 1
    verify_checkpoint(path)
    assert load_checkpoint(path)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model.pt.sha256"]


def test_interrupted_overwrite_record_verifies_old_and_new_bytes(tmp_path):
    """A record left with two digests (kill between the record and the file rename) accepts both files."""
    path = tmp_path / "model.pt"
    save_checkpoint(_state(1), path)
    old = path.read_bytes()
    save_checkpoint(_state(2), path)
    new = path.read_bytes()
    rec = checkpoint_record_path(path)
    d_old, d_new = hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest()
    rec.write_text(
        "# maskmm checkpoint record v1\n"
        f"# bytes {len(new)} sha256 {d_new}\n# bytes {len(old)} sha256 {d_old}\n"
        f"{d_new}  model.pt\n{d_old}  model.pt\n"
    )
    verify_checkpoint(path)
    path.write_bytes(old)
    verify_checkpoint(path)
    # the next overwrite compacts the record to the one digest that matches
    save_checkpoint(_state(3), path)
    assert sum(not ln.startswith("#") for ln in rec.read_text().splitlines()) == 1
    assert load_checkpoint(path)["step"] == 3


# ----------------------------------------------------------------------------- damaged newest checkpoint


def _truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _garbage(p: Path) -> None:  # same size: only the hash can tell
    p.write_bytes(random.Random(0).randbytes(p.stat().st_size))


def _flip64(p: Path) -> None:
    data = bytearray(p.read_bytes())
    n = len(data)
    for i in random.Random(1).sample(range(n // 4, 3 * n // 4), 64):  # inside the tensor bytes
        data[i] ^= 0xFF
    p.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, reason",
    [
        (_truncate, "size mismatch"),
        (_empty, "size mismatch"),
        (_garbage, "SHA-256 mismatch"),
        (_flip64, "SHA-256 mismatch"),
    ],
    ids=["truncated", "empty", "garbage", "flip64"],
)
def test_damaged_newest_is_rejected_and_resume_falls_back(tmp_path, damage, reason):
    for s in (1, 2):
        save_checkpoint(_state(s), tmp_path / f"step_{s}.pt")
    bad = tmp_path / "step_2.pt"
    damage(bad)
    assert latest_checkpoint(tmp_path) == bad  # unchanged meaning: newest by name
    with pytest.raises(CheckpointError, match=reason) as ei:
        verify_checkpoint(bad)
    assert str(bad) in str(ei.value) and ei.value.path == bad
    assert isinstance(ei.value, ValueError)
    with pytest.raises(CheckpointError, match=re.escape(str(bad))):
        load_checkpoint(bad)
    with pytest.warns(CheckpointIntegrityWarning, match=re.escape(str(bad)) + ".*" + reason):
        found = latest_intact_checkpoint(tmp_path)
    assert found == tmp_path / "step_1.pt"
    assert load_checkpoint(found)["step"] == 1
    assert _no_warnings(latest_intact_checkpoint, tmp_path, warn=False) == found


def test_flipped_bytes_would_load_silently_without_verification(tmp_path):
    path = save_checkpoint(_state(5), tmp_path / "step_5.pt")
    _flip64(path)
    got = load_checkpoint(path, verify=False)  # torch itself does not notice
    assert not torch.equal(got["w"], _state(5)["w"])
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        load_checkpoint(path)


def test_all_damaged_gives_none_with_one_warning_each(tmp_path):
    for s in (1, 2):
        _empty(save_checkpoint(_state(s), tmp_path / f"step_{s}.pt"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert latest_intact_checkpoint(tmp_path) is None
    msgs = [str(w.message) for w in caught if issubclass(w.category, CheckpointIntegrityWarning)]
    assert len(msgs) == 2 and "step_2.pt" in msgs[0] and "step_1.pt" in msgs[1]
    assert latest_intact_checkpoint(tmp_path / "missing") is None
    with pytest.raises(ValueError, match="not a directory"):
        latest_intact_checkpoint(tmp_path / "step_1.pt")


def test_missing_and_malformed_records(tmp_path):
    for s in (1, 2, 3):
        save_checkpoint(_state(s), tmp_path / f"step_{s}.pt")
    checkpoint_record_path(tmp_path / "step_3.pt").write_text("not a record\n")
    with pytest.raises(CheckpointError, match=r"step_3\.pt.*malformed"):
        verify_checkpoint(tmp_path / "step_3.pt")
    checkpoint_record_path(tmp_path / "step_2.pt").unlink()
    with pytest.raises(CheckpointError, match=r"step_2\.pt.*no integrity record"):
        verify_checkpoint(tmp_path / "step_2.pt")
    # legacy policy: accepted with a warning when it loads safely
    with pytest.warns(CheckpointIntegrityWarning) as rec:
        found = latest_intact_checkpoint(tmp_path)
    assert found == tmp_path / "step_2.pt"
    text = " | ".join(str(w.message) for w in rec)
    assert "step_3.pt" in text and "malformed" in text and "legacy" in text
    with pytest.warns(CheckpointIntegrityWarning, match="legacy"):
        assert load_checkpoint(found)["step"] == 2
    # ... and skipped when it does not
    _truncate(tmp_path / "step_2.pt")
    with pytest.warns(CheckpointIntegrityWarning) as rec:
        assert latest_intact_checkpoint(tmp_path) == tmp_path / "step_1.pt"
    assert [str(w.message).split("'")[1] for w in rec] == [str(tmp_path / f"step_{s}.pt") for s in (3, 2)]
    with pytest.raises(CheckpointError, match="does not exist"):
        verify_checkpoint(tmp_path / "step_9.pt")


@pytest.mark.parametrize(
    "payload",
    [
        random.Random(2).randbytes(3000),
        b"\x80\x02" + random.Random(3).randbytes(3000),
        pickle.dumps(os.getcwd),  # a pickle that would call a function
        b"hello\n" * 50,
    ],
    ids=["random", "pickle-header", "code-pickle", "text"],
)
def test_garbage_error_names_file_and_never_suggests_unsafe_loading(tmp_path, payload):
    path = tmp_path / "step_1.pt"
    path.write_bytes(payload)
    for kwargs in ({"verify": False}, {}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(CheckpointError) as ei:
                load_checkpoint(path, **kwargs)
        full = "".join(traceback.format_exception(ei.value))
        assert str(path) in str(ei.value)
        assert UNSAFE_ADVICE not in full and "weights_only` set to `False" not in full


def test_disallowed_object_in_a_verified_checkpoint_is_refused_cleanly(tmp_path):
    import datetime

    path = save_checkpoint({"when": datetime.date(2024, 1, 1)}, tmp_path / "step_1.pt")
    verify_checkpoint(path)  # intact, but not loadable with weights_only=True
    with pytest.raises(CheckpointError, match=re.escape("datetime.date")) as ei:
        load_checkpoint(path)
    full = "".join(traceback.format_exception(ei.value))
    assert str(path) in full and UNSAFE_ADVICE not in full


# ----------------------------------------------------------------------------- stale temporaries


def test_clean_stale_temporaries_removes_only_save_leftovers(tmp_path):
    save_checkpoint(_state(1), tmp_path / "step_1.pt")
    orphan = save_checkpoint(_state(2), tmp_path / "step_2.pt")
    orphan.unlink()  # as after a kill in the middle of pruning
    leftovers = [
        ".step_3.pt.abcd1234.tmp",
        ".step_3.pt.sha256.x_y9ab0c.tmp",
        ".model.pt.q1w2e3r4.tmp",
    ]
    foreign = [
        "notes.tmp",
        ".hidden.tmp",
        ".step_3.pt.ABCDEFGH.tmp",  # not a mkstemp name
        ".step_3.pt.abc.tmp",
        "step_4.pt.abcd1234.tmp",  # no leading dot
        "user.sha256",  # not our record format, no user
        "keep.txt",
    ]
    for name in leftovers + foreign:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".dir.abcd1234.tmp").mkdir()
    removed = clean_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted([*leftovers, "step_2.pt.sha256"])
    remaining = sorted(p.name for p in tmp_path.iterdir())
    assert remaining == sorted(["step_1.pt", "step_1.pt.sha256", ".dir.abcd1234.tmp", *foreign])
    assert clean_stale_temporaries(tmp_path) == []
    assert clean_stale_temporaries(tmp_path / "missing") == []
    with pytest.raises(ValueError, match=re.escape("keep.txt")):
        clean_stale_temporaries(tmp_path / "keep.txt")
    verify_checkpoint(tmp_path / "step_1.pt")


# ----------------------------------------------------------------------------- save failures


def _dev_full_mkstemp(monkeypatch, only: str | None = None):
    """Make tempfile.mkstemp hand out a descriptor on /dev/full (writes fail with ENOSPC)."""
    real = tempfile.mkstemp

    def fake(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        if only is not None and only not in os.path.basename(name):
            return fd, name
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name

    monkeypatch.setattr(tempfile, "mkstemp", fake)


needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")


@needs_dev_full
@pytest.mark.parametrize("n", [4, 1_000_000], ids=["small-state", "large-state"])
@pytest.mark.parametrize("target", ["step_2.pt", "step_1.pt"], ids=["new-name", "overwrite"])
def test_disk_full_save_raises_named_oserror_and_keeps_older(tmp_path, monkeypatch, n, target):
    older = save_checkpoint(_state(1), tmp_path / "step_1.pt")
    before = sorted(os.listdir(tmp_path))
    _dev_full_mkstemp(monkeypatch)
    path = tmp_path / target
    with pytest.raises(CheckpointSaveError) as ei:
        save_checkpoint({"w": torch.randn(n)}, path)
    e = ei.value
    assert isinstance(e, OSError) and e.errno == errno.ENOSPC
    assert str(path) in str(e) and os.strerror(errno.ENOSPC) in str(e)
    assert "enforce fail" not in str(e)
    assert e.path == path
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == before  # no tmp, no record of the failed save
    verify_checkpoint(older)
    assert load_checkpoint(older)["step"] == 1


@needs_dev_full
def test_torch_save_itself_hides_the_os_reason_for_a_large_state():
    """The case the translation exists for: torch wraps the ENOSPC into its own RuntimeError."""
    f = open("/dev/full", "wb")  # noqa: SIM115 - closing flushes into /dev/full and fails
    try:
        with pytest.raises(RuntimeError, match="enforce fail") as ei:
            torch.save({"w": torch.randn(1_000_000)}, f)
        assert "No space left" not in str(ei.value)
    finally:
        with contextlib.suppress(OSError):
            f.close()


@needs_dev_full
@pytest.mark.parametrize("target", ["step_2.pt", "step_1.pt"], ids=["new-name", "overwrite"])
def test_disk_full_while_writing_the_record(tmp_path, monkeypatch, target):
    older = save_checkpoint(_state(1), tmp_path / "step_1.pt")
    before = {p: (tmp_path / p).read_bytes() for p in os.listdir(tmp_path)}
    _dev_full_mkstemp(monkeypatch, only=".sha256.")
    with pytest.raises(CheckpointSaveError, match=re.escape(str(tmp_path / target))):
        save_checkpoint(_state(2), tmp_path / target)
    monkeypatch.undo()
    assert {p: (tmp_path / p).read_bytes() for p in os.listdir(tmp_path)} == before
    verify_checkpoint(older)


def test_unpicklable_state_error_is_not_translated(tmp_path):
    class Boom:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle") as ei:
        save_checkpoint({"v": Boom()}, tmp_path / "step_1.pt")
    assert not isinstance(ei.value, OSError)
    assert os.listdir(tmp_path) == []
    with pytest.raises(TypeError, match="state"):
        save_checkpoint([1], tmp_path / "step_1.pt")


# ----------------------------------------------------------------------------- pruning


def test_prune_deletes_only_what_this_run_wrote(tmp_path):
    foreign = save_checkpoint(_state(1), tmp_path / "step_1.pt")  # an earlier run's
    save_checkpoint(_state(100), tmp_path / "step_100.pt")  # newer, not ours either
    written = [save_checkpoint(_state(s), tmp_path / f"step_{s}.pt") for s in (2, 3, 4, 5, 6)]
    removed = prune_checkpoints(tmp_path, 2, written_by=[*reversed(written), written[0]])
    assert removed == written[:3]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"step_{s}.pt{ext}" for s in (1, 5, 6, 100) for ext in ("", ".sha256")), names
    verify_checkpoint(foreign)
    assert prune_checkpoints(tmp_path, 2, written_by=written) == []  # already gone: ignored
    assert prune_checkpoints(tmp_path, 0, written_by=written) == written[3:]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"step_{s}.pt{ext}" for s in (1, 100) for ext in ("", ".sha256")
    )


def test_prune_rejects_bad_arguments(tmp_path):
    p = save_checkpoint(_state(1), tmp_path / "a" / "step_1.pt")
    with pytest.raises(ValueError, match="keep"):
        prune_checkpoints(tmp_path / "a", -1, written_by=[p])
    with pytest.raises(TypeError, match="keep"):
        prune_checkpoints(tmp_path / "a", "2", written_by=[p])
    with pytest.raises(ValueError, match="not inside folder"):
        prune_checkpoints(tmp_path / "b", 0, written_by=[p])
    with pytest.raises(ValueError, match=re.escape("model.pt")):
        prune_checkpoints(tmp_path / "a", 0, written_by=[tmp_path / "a" / "model.pt"])
    with pytest.raises(TypeError, match="written_by"):
        prune_checkpoints(tmp_path / "a", 0, written_by=str(p))
    verify_checkpoint(p)


# ----------------------------------------------------------------------------- kill -9 during saves


def _save_forever(folder: Path, progress: Path, start: int, base: torch.Tensor) -> None:
    written: list[Path] = []
    step = start
    while True:
        base[0] = float(step)
        state = {"step": step, "w": base}
        written.append(save_checkpoint(state, folder / f"step_{step}.pt"))
        save_checkpoint(state, folder / "last.pt")  # an overwritten name
        prune_checkpoints(folder, 2, written_by=written)
        written = written[-2:]
        with open(progress, "a") as f:
            f.write(f"{step}\n")
        step += 1


def _check_loadable(path: Path, base: torch.Tensor) -> int:
    state = _no_warnings(load_checkpoint, path)
    assert state["w"][0].item() == state["step"]
    assert torch.equal(state["w"][1:], base[1:])
    return state["step"]


@pytest.mark.skipif(sys.platform != "linux", reason="forks and SIGKILLs a child")
def test_kill9_at_random_points_always_leaves_a_resumable_folder(tmp_path):
    folder, progress = tmp_path / "ckpt", tmp_path / "progress.txt"
    progress.touch()
    base = torch.randn(1 << 20)  # 4 MB
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(20240611)
    stale_seen = 0
    for _ in range(10):
        stale_seen += len(clean_stale_temporaries(folder))
        assert not folder.exists() or _tmp_files(folder) == []
        latest = _no_warnings(latest_intact_checkpoint, folder)
        start = _check_loadable(latest, base) + 1 if latest else 0
        proc = ctx.Process(target=_save_forever, args=(folder, progress, start, base), daemon=True)
        proc.start()
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        assert proc.exitcode == -signal.SIGKILL

        done = [int(x) for x in progress.read_text().split()]
        # every step checkpoint present verifies: no instant exposes an unrecorded or partial one
        found = _no_warnings(latest_intact_checkpoint, folder)
        for p in folder.glob("step_*.pt") if folder.exists() else []:
            verify_checkpoint(p)
        if (folder / "last.pt").exists():
            _check_loadable(folder / "last.pt", base)
        if done:
            assert found is not None and _check_loadable(found, base) >= max(done)
        elif found is not None:  # completed, killed before reporting it
            _check_loadable(found, base)
    stale_seen += len(clean_stale_temporaries(folder))
    assert folder.exists() and _tmp_files(folder) == []
    assert [p for p in folder.iterdir() if p.name.startswith(".")] == []
    found = latest_intact_checkpoint(folder)
    assert found is not None or not progress.read_text()


# ----------------------------------------------------------------------------- metrics truncation


def test_truncate_metrics_drops_later_and_partial_rows(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [f'{{"step": {s}, "time": 0.{s}, "loss": {1.0 / (s + 1)!r}}}\n' for s in range(1, 6)]
    path.write_text("".join(rows) + '{"loss": 3}\n' + '{"step": 6, "lo')  # no step + partial line
    path.chmod(0o644)
    assert truncate_metrics(path, 3) == 4  # steps 4, 5, the row without step, the partial line
    assert path.read_text() == "".join(rows[:3])  # byte for byte
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert _tmp_files(tmp_path) == []
    assert truncate_metrics(path, 3) == 0 and path.read_text() == "".join(rows[:3])
    assert truncate_metrics(path, 0) == 3 and path.read_text() == ""
    assert truncate_metrics(tmp_path / "missing.jsonl", 5) == 0
    with pytest.raises(TypeError, match="step"):
        truncate_metrics(path, "3")
    with pytest.raises(ValueError, match="step"):
        truncate_metrics(path, -1)
    with pytest.raises(ValueError, match=re.escape(str(tmp_path))):
        truncate_metrics(tmp_path, 1)
