"""Decay schedules: values at chosen steps against closed forms, validation, purity."""

from __future__ import annotations

import math

import pytest

from maskmm.teachers import (
    ConstantDecay,
    CosineDecay,
    CountWarmupDecay,
    LinearDecay,
    PowerWarmupDecay,
    WarmupDecay,
    as_schedule,
)


def test_constant() -> None:
    s = ConstantDecay(0.995)
    assert [s(t) for t in (0, 1, 10**6)] == [0.995, 0.995, 0.995]


@pytest.mark.parametrize(
    "step,expected", [(0, 0.9), (1, 0.9 + 0.09 / 7), (3, 0.9 + 0.09 * 3 / 7), (7, 0.99), (50, 0.99)]
)
def test_linear(step: int, expected: float) -> None:
    assert LinearDecay(0.9, 0.99, 7)(step) == pytest.approx(expected, abs=1e-12)


def test_linear_zero_steps_is_final() -> None:
    assert LinearDecay(0.5, 0.8, 0)(0) == 0.8


@pytest.mark.parametrize("step", [0, 1, 5, 10, 11, 100])
def test_cosine(step: int) -> None:
    base, final, n = 0.996, 1.0, 11
    k = min(step, n)
    expected = 1.0 - (1.0 - base) * (math.cos(math.pi * k / n) + 1.0) / 2.0  # BYOL form
    assert CosineDecay(base, final, n)(step) == pytest.approx(expected, abs=1e-12)
    half = CosineDecay(0.2, 0.6, 10)(5)
    assert half == pytest.approx(0.4, abs=1e-12)


def test_warmup_shift_and_no_shift() -> None:
    inner = LinearDecay(0.5, 0.9, 4)
    w = WarmupDecay(inner, 3)
    assert [w(t) for t in (0, 1, 2)] == [0.0, 0.0, 0.0]
    assert w(3) == pytest.approx(0.5) and w(5) == pytest.approx(0.7) and w(100) == pytest.approx(0.9)
    ns = WarmupDecay(inner, 3, warmup_value=0.25, shift=False)
    assert ns(2) == 0.25 and ns(3) == pytest.approx(0.8)
    assert WarmupDecay(0.99, 2)(2) == 0.99  # a float is a constant schedule


@pytest.mark.parametrize("step", [0, 1, 7, 1000, 10**7])
def test_count_warmup(step: int) -> None:
    assert CountWarmupDecay(0.999, 10)(step) == pytest.approx(min(0.999, (1 + step) / (10 + step)), abs=1e-12)


@pytest.mark.parametrize("step", [0, 1, 9, 10_000, 10**8])
def test_power_warmup(step: int) -> None:
    expected = min(0.9999, max(0.0, 1 - (1 + step / 2.0) ** -0.75))
    assert PowerWarmupDecay(0.9999, gamma=2.0, power=0.75)(step) == pytest.approx(expected, abs=1e-12)
    assert PowerWarmupDecay(0.9999, min_decay=0.3)(0) == 0.3


def test_schedules_are_pure_functions_of_step() -> None:
    s = WarmupDecay(CosineDecay(0.9, 1.0, 13), 5)
    first = [s(t) for t in range(30)]
    assert [s(t) for t in reversed(range(30))][::-1] == first
    assert all(0.0 <= v <= 1.0 for v in first)


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: ConstantDecay(1.5), "value"),
        (lambda: LinearDecay(-0.1, 0.9, 3), "base"),
        (lambda: CosineDecay(0.9, 2.0, 3), "final"),
        (lambda: LinearDecay(0.9, 0.99, -1), "steps"),
        (lambda: WarmupDecay(0.9, 2, warmup_value=3.0), "warmup_value"),
        (lambda: CountWarmupDecay(0.99, offset=0.5), "offset"),
        (lambda: PowerWarmupDecay(0.5, min_decay=0.9), "min_decay"),
        (lambda: as_schedule(1.01), "decay"),
    ],
)
def test_bad_parameters_raise_value_error(build, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_types_and_steps() -> None:
    with pytest.raises(TypeError, match="decay"):
        as_schedule("0.9")
    with pytest.raises(TypeError, match="steps"):
        LinearDecay(0.9, 0.99, 2.5)
    with pytest.raises(ValueError, match="step"):
        ConstantDecay(0.9)(-1)
    with pytest.raises(TypeError, match="step"):
        ConstantDecay(0.9)(True)
