from __future__ import annotations

import io
import json

import pytest
import torch

from maskmm.training import MetricsLogger, ProgressBar, plot_metrics, read_metrics, select_plot_keys


def test_jsonl_logger_rows(tmp_path):
    path = tmp_path / "m" / "metrics.jsonl"
    with MetricsLogger(path) as log:
        log.log({"loss": torch.tensor(1.5), "vec": torch.tensor([1.0, 2.0]), "nan": float("nan")}, step=3)
        log.log({"loss": 0.5, "eval/tr_r1": 40.0}, step=7)
    rows = read_metrics(path)
    assert [r["step"] for r in rows] == [3, 7]
    assert rows[0]["loss"] == 1.5 and rows[0]["vec"] == [1.0, 2.0] and rows[0]["nan"] == "nan"
    lines = path.read_text().strip().splitlines()
    assert all(isinstance(json.loads(x), dict) for x in lines)


def test_logger_disabled_writes_nothing(tmp_path):
    log = MetricsLogger(tmp_path / "x.jsonl", enabled=False)
    assert log.log({"a": 1}) is None
    assert not (tmp_path / "x.jsonl").exists()


def test_read_metrics_ignores_truncated_line(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert read_metrics(p) == [{"step": 1, "loss": 2.0}]


def test_plain_progress_bar_prints():
    buf = io.StringIO()
    bar = ProgressBar(4, desc="train", use_tqdm=False, every=2, stream=buf)
    for _ in range(4):
        bar.set_postfix({"loss": 0.25})
        bar.update()
    bar.close()
    lines = buf.getvalue().strip().splitlines()
    assert len(lines) == 2 and lines[-1].startswith("train 4/4") and "loss=0.25" in lines[-1]
    quiet = io.StringIO()
    ProgressBar(3, enabled=False, stream=quiet).update(3)
    assert quiet.getvalue() == ""


def test_plot_metrics_png(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib not installed")
    p = tmp_path / "m.jsonl"
    with MetricsLogger(p) as log:
        for s in range(5):
            log.log({"loss": 1.0 / (s + 1), "loss_itc": 0.5, "eval/tr_r1": float(s)}, step=s)
    out = plot_metrics(p, tmp_path / "plot.png")
    assert out is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    assert plot_metrics(empty, tmp_path / "e.png") is None


def test_plot_keys_are_losses_and_recalls_only():
    rows = [
        {"step": 1, "time": 0.5, "loss": 2.0, "loss_itc": 1.0, "lr": 1e-4, "itm/accuracy": 0.6},
        {"step": 2, "eval/itc_tr_r1": 10.0, "eval/itc_ir_r10": 50.0, "eval/itc_r_mean": 30.0},
        {"step": 2, "eval/strict_itc_tr_r1": 5.0, "eval/candidates": 500, "eval/tr_r5": 20.0, "flag": True},
    ]
    assert select_plot_keys(rows) == ["loss", "loss_itc", "eval/itc_tr_r1", "eval/itc_ir_r10", "eval/tr_r5"]
