"""The CPU-runnable pieces of benchmarks/attention_gpu.py: cases, FLOP/byte counting, result files.

A fake timer is injected; nothing here measures or asserts speed.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "attention_gpu.py"


@pytest.fixture(scope="module")
def bench():
    if not _PATH.exists():
        pytest.skip(f"{_PATH} is not part of this checkout")
    spec = importlib.util.spec_from_file_location("attention_gpu_under_test", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_cases_have_the_documented_shapes(bench):
    cases = {c.name: c for c in bench.build_cases()}
    assert set(cases) == {"vit_b", "vit_b_drop25", "bert_text", "cross_t2i", "merged_fusion", "long"}
    assert cases["vit_b"].shape() == {"B": 128, "H": 12, "Lq": 197, "Lk": 197, "D": 64}
    assert not cases["vit_b"].masked
    drop = cases["vit_b_drop25"]
    kept = sum(drop.k_lengths) / (128 * 197)
    assert 0.7 < kept < 0.8 and len(set(drop.k_lengths)) > 1  # ~25% dropped, variable lengths
    cross = cases["cross_t2i"]
    assert (cross.q_len, cross.k_len, cross.k_lengths) == (40, 197, None) and max(cross.q_lengths) <= 40
    fusion = cases["merged_fusion"]
    assert fusion.k_len == 237 and min(fusion.k_lengths) >= 197 + 8
    assert cases["long"].q_len == 1024
    assert bench.build_cases(seed=0) == bench.build_cases(seed=0)


def test_flop_and_byte_counts_by_hand(bench):
    case = bench.Case("t", 2, 3, 5, 7, 16, (5, 2), (7, 3), "x")
    assert bench.attention_flops(case, "fwd") == 4 * 3 * 16 * (2 * 5 * 7)
    assert bench.attention_flops(case, "fwd", useful=True) == 4 * 3 * 16 * (5 * 7 + 2 * 3)
    assert bench.attention_flops(case, "fwd_bwd") == pytest.approx(3.5 * 4 * 3 * 16 * 70)
    q_el, k_el = 2 * 3 * 5 * 16, 2 * 3 * 7 * 16
    assert bench.attention_bytes(case, "fwd", 2) == 2 * (2 * q_el + 2 * k_el)
    assert bench.attention_bytes(case, "fwd_bwd", 2) == 2 * (6 * q_el + 6 * k_el)


def test_scale_case_and_inputs(bench):
    small = bench.scale_case(next(c for c in bench.build_cases() if c.name == "cross_t2i"))
    assert small.batch == 2 and small.heads == 2 and small.k_len <= 48 and small.q_len <= 48
    assert all(1 <= n <= small.q_len for n in small.q_lengths)
    q, k, _, mask = bench.make_inputs(small, device="cpu", dtype=torch.float32)
    assert q.shape == (2, 2, small.q_len, 64) and k.shape == (2, 2, small.k_len, 64)
    assert mask.query_valid.sum(-1).tolist() == list(small.q_lengths) and bool(mask.key_valid.all())


def test_summarize_percentiles(bench):
    t = bench.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (t.median_ms, t.min_ms, t.p20_ms, t.p80_ms, t.repeats) == (3.0, 1.0, 2.0, 4.0, 5)


def test_run_with_fake_timer_writes_json_and_markdown(bench, tmp_path):
    calls = []

    def fake_timer(fn):
        fn()  # the callable must really run
        calls.append(1)
        return bench.Timing(2.0, 1.5, 1.8, 2.2, 3)

    cases = [bench.scale_case(c, max_len=12) for c in bench.build_cases() if c.name in ("vit_b", "bert_text")]
    variants = [
        v for v in bench.default_variants() if v.name in ("maskmm-sdpa", "sdpa-flash-mask", "xformers")
    ]
    payload = bench.run(
        cases,
        variants,
        device=torch.device("cpu"),
        dtype=torch.float32,
        timer=fake_timer,
        memory=lambda fn, dev: 12.5,
        copy_bytes=1 << 12,
    )
    rows = payload["results"]
    assert len(rows) == 2 * 3 * 2
    timed = [r for r in rows if "skipped" not in r]
    assert {r["backend"] for r in timed} == {"maskmm-sdpa"} and len(timed) == 4
    r = next(r for r in timed if r["case"] == "bert_text" and r["direction"] == "fwd")
    case = cases[1]
    assert r["dense_tflops"] == pytest.approx(bench.attention_flops(case, "fwd") / 2e-3 / 1e12)
    assert r["useful_tflops"] < r["dense_tflops"]  # padding is not useful work
    assert r["peak_mem_mb"] == 12.5 and r["median_ms"] == 2.0 and r["p80_ms"] == 2.2
    assert payload["copy_bandwidth"]["gbps"] == pytest.approx(2 * 4096 / 2e-3 / 1e9)
    assert any("xformers" in x["backend"] and "not installed" in x["skipped"] for x in rows if "skipped" in x)

    json_path, md_path = bench.write_results(payload, tmp_path)
    assert json_path.name.startswith("attention-") and json_path.suffix == ".json"
    loaded = json.loads(json_path.read_text())
    assert loaded["results"] == json.loads(json.dumps(rows))
    assert {"date", "torch", "triton", "device_name"} <= set(loaded["environment"])
    table = md_path.read_text()
    assert "| bert_text | maskmm-sdpa | float32 | fwd | 2.000 |" in table and "Not run:" in table
    assert "Targets:" in table  # the performance targets, "n/a" where a side was not measured


def test_device_slug(bench):
    assert bench.device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert bench.device_slug("  ") == "unknown"


def _fake_payload(bench, rows, copy_gbps=1000.0, dtype="bfloat16"):
    return {
        "environment": {"device_name": "Fake GPU", "date": "d", "torch": "t", "triton": "x"},
        "dtype": dtype,
        "copy_bandwidth": {"bytes": 1.0, "median_ms": 1.0, "gbps": copy_gbps},
        "results": rows,
    }


def _timed(case, backend, direction, ms, dtype="bfloat16", gbps=0.0):
    timing = {"median_ms": ms, "min_ms": ms, "p20_ms": ms, "p80_ms": ms, "repeats": 1}
    speed = {"dense_tflops": 1.0, "useful_tflops": 1.0, "gbps": gbps, "peak_mem_mb": None}
    return {"case": case, "backend": backend, "direction": direction, "dtype": dtype, **timing, **speed}


def test_targets_are_ratios_of_medians(bench):
    rows = [
        _timed("vit_b_drop25", "maskmm-triton", "fwd_bwd", 0.5),
        _timed("vit_b_drop25", "flex-compiled", "fwd_bwd", 0.8),
        _timed("vit_b_drop25", "sdpa-cudnn-nomask", "fwd_bwd", 0.4),
        _timed("cross_t2i", "maskmm-triton", "fwd", 0.1, gbps=700.0),
        _timed("bert_text", "maskmm-triton", "fwd_bwd", 0.3, dtype="float16"),  # other dtype: ignored
    ]
    targets = {
        (t["case"], t["target"], t["direction"]): t for t in bench.check_targets(_fake_payload(bench, rows))
    }
    flex = targets[("vit_b_drop25", "maskmm-triton <= 0.75 x flex-compiled", "fwd_bwd")]
    assert flex["value"] == pytest.approx(0.625) and flex["met"] is True
    cudnn = targets[("vit_b_drop25", "maskmm-triton <= 1 x sdpa-cudnn-nomask", "fwd_bwd")]
    assert cudnn["value"] == pytest.approx(1.25) and cudnn["met"] is False
    copy = targets[("cross_t2i", "maskmm-triton GB/s >= 0.6 x copy bandwidth", "fwd")]
    assert copy["value"] == pytest.approx(0.7) and copy["met"] is True
    assert targets[("bert_text", "maskmm-triton <= 0.75 x flex-compiled", "fwd_bwd")]["met"] is None


def test_merge_keeps_rows_not_remeasured(bench, tmp_path):
    old = _fake_payload(bench, [_timed("vit_b", "a", "fwd", 1.0), _timed("vit_b", "b", "fwd", 2.0)])
    new = _fake_payload(
        bench, [_timed("vit_b", "b", "fwd", 3.0), _timed("vit_b", "b", "fwd", 4.0, "float16")]
    )
    new["copy_bandwidth"] = None
    merged = bench.merge_payloads(old, new)
    got = {(r["backend"], r["dtype"]): r["median_ms"] for r in merged["results"]}
    assert got == {("a", "bfloat16"): 1.0, ("b", "bfloat16"): 3.0, ("b", "float16"): 4.0}
    assert merged["copy_bandwidth"]["gbps"] == 1000.0  # kept from the earlier run
    assert {t["dtype"] for t in merged["targets"]} == {"bfloat16", "float16"}
    # write_results(merge=True) does the same through the files
    for payload in (old, new):
        json_path, md_path = bench.write_results(payload, tmp_path, merge=True)
    assert len(json.loads(json_path.read_text())["results"]) == 3
    table = md_path.read_text()
    assert (
        "| vit_b | a | bfloat16 | fwd | 1.000 |" in table and "| vit_b | b | float16 | fwd | 4.000 |" in table
    )


def test_deadline_skips_remaining_cases_and_reports_progress(bench):
    cases = [bench.scale_case(c, max_len=8) for c in bench.build_cases()[:2]]
    variants = [v for v in bench.default_variants() if v.name == "maskmm-sdpa"]
    seen = []
    payload = bench.run(
        cases,
        variants,
        device=torch.device("cpu"),
        dtype=torch.float32,
        timer=lambda fn: (fn(), bench.Timing(1.0, 1.0, 1.0, 1.0, 1))[1],
        memory=lambda fn, dev: None,
        copy_bytes=0,
        deadline=0.0,  # already passed: nothing is timed
        on_case=lambda p: seen.append(len(p["results"])),
    )
    assert payload["copy_bandwidth"] is None
    assert all("time budget" in r["skipped"] for r in payload["results"]) and len(payload["results"]) == 4
    assert seen == []  # no case ran
