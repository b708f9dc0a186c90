"""Smoke test of ``benchmarks/mamo_train_gpu.py`` (throughput / memory / loss curve) on a CPU."""

from __future__ import annotations

import json

import pytest
from mamo_helpers import SMALL_MODEL, benchmark_script


@pytest.fixture
def bench():
    with benchmark_script("mamo_train_gpu") as module:
        yield module


def test_records_throughput_and_losses(bench, tmp_path, capsys):
    sets = [x for o in [*SMALL_MODEL, "data.train_size=64", "train.num_workers=0"] for x in ("--set", o)]
    argv = ["--config", "tiny", "--allow-cpu", "--steps", "4", "--warmup", "1", "--batch-size", "4"]
    assert bench.main([*argv, "--log-every", "2", "--out", str(tmp_path), *sets]) == 0
    (path,) = tmp_path.glob("mamo-tiny-train-*.json")
    r = json.loads(path.read_text())
    assert len(r["step_seconds"]) == 4 and r["samples_per_second"] > 0
    assert r["samples_per_second"] == pytest.approx(4 * 3 / sum(r["step_seconds"][1:]))
    assert [h["step"] for h in r["history"]] == [2, 4]
    assert {"loss", "loss_itc", "loss_itm", "loss_mlm", "loss_mrm", "loss_mim"} <= set(r["history"][-1])
    assert r["config"]["model"]["vision_dim"] == 32 and r["environment"]["device"].startswith("cpu")
    assert (tmp_path / path.name.replace(".json", ".md")).read_text() in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "--steps must be >= 1"),
        (["--steps", "5", "--warmup", "5"], "--warmup must lie in [0, --steps)"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
    ],
)
def test_rejects_bad_arguments(bench, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
