"""The ITM diagnosis script (``benchmarks/itm_diagnosis.py``) end to end on a small model: two variants
trained for a few steps by ``maskmm-train``, evaluated by ``maskmm-eval`` at two re-rank weights."""

from __future__ import annotations

import json
import shutil

import pytest
from mamo_helpers import SMALL_MODEL, benchmark_script

pytestmark = pytest.mark.skipif(
    shutil.which("maskmm-train") is None, reason="the maskmm-train console script is not installed"
)


def test_two_variants_are_trained_evaluated_and_tabulated(tmp_path):
    sets = [*SMALL_MODEL, "train.steps=3", "train.batch_size=8", "data.train_size=32", "optim.warmup_steps=0"]
    argv = ["--variants", "baseline,no_facts", "--weights", "0,10", "--quick", "--splits", "heldout"]
    argv += ["--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    for s in sets:
        argv += ["--set", s]
    with benchmark_script("itm_diagnosis") as bench:
        assert bench.main(argv) == 0
        with pytest.raises(SystemExit):
            bench.parse_args(["--variants", "baseline,nope"])
    (report_path,) = (tmp_path / "out").glob("itm-diagnosis-*.json")
    report = json.loads(report_path.read_text())
    assert list(report["variants"]) == ["baseline", "no_facts"]
    for name, entry in report["variants"].items():
        assert "pair_facts: " + ("false" if name == "no_facts" else "true") in entry["config_yaml"]
        assert set(entry["by_weight"]) == {"0", "10"}
        for res in entry["by_weight"].values():
            r = res["heldout"]["retrieval"]
            assert r["candidates"] == 100 and 0 <= r["itm_tr_r1"] <= 100 and 0 <= r["itc_ir_r1"] <= 100
            assert set(res["heldout"]["finegrained"]) >= {"relation", "mean"}
    md = report_path.with_suffix(".md").read_text()
    assert "ITM log-odds + 10 x ITC cosine" in md and "| no_facts |" in md
    # a second invocation reuses the trained runs (no training: their folders already hold model.pt)
    before = (tmp_path / "runs" / "baseline" / "model.pt").stat().st_mtime_ns
    with benchmark_script("itm_diagnosis") as bench:
        assert bench.main([*argv[:2], "--weights", "0", *argv[4:]]) == 0
    assert (tmp_path / "runs" / "baseline" / "model.pt").stat().st_mtime_ns == before
