"""The documented differences from the reference implementations (``docs/differences.md``) stay true.

Runs the measuring functions of ``benchmarks/reference_differences.py`` at small sizes and checks the
qualitative facts the docs state; the numbers themselves live in
``benchmarks/results/reference-differences.md``.
"""

from __future__ import annotations

import importlib
import random
import sys
from pathlib import Path

import pytest

_MODEL_HELPERS = str(Path(__file__).resolve().parent / "models")
if _MODEL_HELPERS not in sys.path:
    sys.path.insert(0, _MODEL_HELPERS)
benchmark_script = importlib.import_module("mamo_helpers").benchmark_script


@pytest.fixture(scope="module")
def ref():
    with benchmark_script("reference_differences") as module:
        yield module


def test_token_masking_exact_count_and_no_special_ids(ref) -> None:
    lengths = [3, 4, 5, 8, 9, 12, 15, 22, 30] * 40  # every caption has >= 1 maskable token
    out = ref.measure_token_masking(lengths, seed=0)
    ours = out["maskmm"]
    assert ours["zero_frac"] == 0.0
    assert ours["count_std_given_length"] == 0.0  # the count is a function of the length
    assert ours["special_chosen"] == 0 and ours["sep_chosen_frac"] == 0.0
    assert ours["random_replacements"] > 0 and ours["random_special_frac"] == 0.0
    for name in ("albef", "hf_collator"):  # Bernoulli(p) per token
        assert out[name]["zero_frac"] > 0.0
        assert out[name]["count_std"] > ours["count_std"]
    assert out["albef"]["sep_chosen_frac"] > 0.0  # ALBEF excludes only PAD and CLS
    assert out["hf_collator"]["sep_chosen_frac"] == 0.0


def test_block_masking_reaches_the_count_where_beit_falls_short(ref) -> None:
    out = ref.measure_block_masking(120, seed=0)
    assert out["maskmm"]["shortfall_frac"] == 0.0
    assert out["maskmm"]["min_count"] == out["maskmm"]["max_count"] == 75
    assert out["beit"]["shortfall_frac"] > 0.1
    assert out["beit"]["max_count"] <= 75  # BEiT never overshoots, it only stops short


def test_beit_reference_never_overshoots_and_falls_short_at_random(ref) -> None:
    rng = random.Random(3)
    counts = [sum(map(sum, ref.beit_block_mask_reference(rng, (14, 14), 75))) for _ in range(40)]
    assert max(counts) <= 75 and min(counts) < 75


def test_random_masking_rounding_and_noise_order(ref) -> None:
    out = ref.measure_random_masking(
        [(196, 0.75), (196, 0.4), (10, 0.33), (5, 0.9)], sweep_lengths=range(1, 65), batch=8
    )
    rows = {(r["L"], r["ratio"]): r for r in out["cases"]}
    assert all(r["maskmm_masks_lowest_noise"] for r in rows.values())
    assert rows[(196, 0.75)]["maskmm"] == rows[(196, 0.75)]["mae"] == 147
    assert rows[(196, 0.75)]["mae_on_one_minus_noise_equals_maskmm"]  # MAE keeps the lowest noise
    assert (rows[(196, 0.4)]["maskmm"], rows[(196, 0.4)]["mae"]) == (78, 79)  # 78.4: half-up vs up
    assert (rows[(10, 0.33)]["maskmm"], rows[(10, 0.33)]["mae"]) == (3, 4)
    assert (rows[(5, 0.9)]["maskmm"], rows[(5, 0.9)]["mae"]) == (4, 5)  # maskmm keeps one visible
    for r in out["sweep"]:
        assert r["mae_more"] == r["differ"] and r["max_diff"] <= 1  # MAE never masks fewer


def test_ema_copies_buffers_and_matches_the_average_of_parameters(ref) -> None:
    out = ref.measure_ema(12)
    assert out["param_max_abs_diff"] <= 1e-6
    assert out["maskmm_running_mean"] == pytest.approx(out["student_running_mean"], abs=1e-6)
    assert abs(out["timm_v3_running_mean"] - out["student_running_mean"]) > 0.5
    assert out["num_batches_tracked_equal"]


def test_queue_differs_only_until_it_is_full(ref) -> None:
    out = ref.measure_queue(batch=8, queue_size=32, dim=16, extra_steps=2)
    assert out["step1_maskmm_fn_with_albef_queue"] == pytest.approx(out["step1_albef"], rel=1e-5)
    assert out["step1_albef"] > out["step1_maskmm"] + 0.1
    assert out["max_abs_diff_while_filling"] > 0.1
    assert out["max_abs_diff_after_full"] <= 1e-5
    assert out["first_equal_step"] == out["steps_until_full"] + 1
