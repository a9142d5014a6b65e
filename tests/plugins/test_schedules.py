"""Built-in sparsity schedules: formulas, bounds, monotonicity, option validation."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import squeezer
from squeezer import ConfigError
from squeezer_schedules.schedules import CubicSchedule, GeometricSchedule, OneShotSchedule

REGISTRY = squeezer.load_registry(autoload=False)
targets = st.one_of(st.sampled_from([0.0, 1.0, 0.5, 0.9]), st.floats(0.0, 1.0))
rounds = st.integers(1, 40)


def test_one_shot() -> None:
    assert OneShotSchedule(target=0.8).sparsities() == [0.8]
    assert REGISTRY.create("scheduler", "one_shot", {"target": 0.0}).sparsities() == [0.0]


@given(target=targets, n=rounds)
def test_geometric_prunes_a_constant_fraction_of_the_remaining(target: float, n: int) -> None:
    values = GeometricSchedule(target=target, rounds=n).sparsities()
    assert len(values) == n and values[-1] == target
    keep = 1.0 - target
    for r, v in enumerate(values[:-1], start=1):
        assert v == pytest.approx(1.0 - keep ** (r / n), abs=1e-12)
    if target < 1.0:
        fraction = 1.0 - keep ** (1.0 / n)
        remaining = [1.0, *(1.0 - v for v in values)]
        for before, after in itertools.pairwise(remaining):
            # 1 - v carries an absolute error of ~1e-16, large relative to a tiny remainder
            tolerance = 1e-9 + 4e-16 / after if after > 0 else math.inf
            assert 1.0 - after / before == pytest.approx(fraction, abs=tolerance)


def test_geometric_example() -> None:
    values = GeometricSchedule(target=0.75, rounds=2).sparsities()
    assert values == [pytest.approx(0.5), 0.75]  # half of the weights, then half of the rest


@given(target=targets, initial=st.floats(0.0, 1.0), n=rounds)
def test_cubic_is_zhu_and_gupta(target: float, initial: float, n: int) -> None:
    initial = min(initial, target)
    values = CubicSchedule(target=target, initial=initial, rounds=n).sparsities()
    assert len(values) == n and values[-1] == target
    t0, dt = 100, 7  # the formula in training steps: pruning at t = t0 + k*dt, k = 1..n
    for k, v in enumerate(values, start=1):
        t = t0 + k * dt
        expected = target + (initial - target) * (1 - (t - t0) / (n * dt)) ** 3
        assert v == pytest.approx(expected, abs=1e-12)


def test_cubic_example() -> None:
    values = CubicSchedule(target=0.8, initial=0.0, rounds=2).sparsities()
    assert values == [pytest.approx(0.8 - 0.8 * 0.125), 0.8]


@given(name=st.sampled_from(["one_shot", "geometric", "cubic"]), target=targets, n=rounds, initial=st.floats(0, 1))
def test_monotone_in_unit_interval_ending_at_target(name: str, target: float, n: int, initial: float) -> None:
    options: dict[str, object] = {"target": target}
    if name != "one_shot":
        options["rounds"] = n
    if name == "cubic":
        options["initial"] = min(initial, target)
    values = REGISTRY.create("scheduler", name, options).sparsities()
    assert values and values[-1] == target
    assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in values)
    assert all(b >= a for a, b in itertools.pairwise(values))


@pytest.mark.parametrize(("target", "n"), [(4.0711801789890774e-16, 11), (4.085256494619472e-16, 29)])
def test_geometric_monotone_for_tiny_targets(target: float, n: int) -> None:
    values = GeometricSchedule(target=target, rounds=n).sparsities()
    assert all(b >= a for a, b in itertools.pairwise(values)), values[-3:]


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("one_shot", {"target": 1.5}),
        ("one_shot", {"target": -0.5}),
        ("one_shot", {"target": float("nan")}),
        ("geometric", {"target": 0.5, "rounds": 0}),
        ("geometric", {"target": 0.5, "rounds": -3}),
        ("cubic", {"target": 0.5, "initial": 0.6}),
        ("cubic", {"target": 0.5, "initial": -0.1}),
        ("cubic", {"target": 0.5, "rounds": 0}),
        ("cubic", {"target": 0.5, "steps": 3}),
        ("geometric", {}),
    ],
)
def test_invalid_options(name: str, options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        REGISTRY.create("scheduler", name, options)
    cls = REGISTRY.get("scheduler", name).cls
    if set(options) <= {"target", "rounds", "initial"} and "target" in options:
        with pytest.raises(ValueError):
            cls(**options)


@pytest.mark.parametrize("name", ["geometric", "cubic"])
def test_non_integer_rounds_rejected(name: str) -> None:
    with pytest.raises(ConfigError, match="rounds"):
        REGISTRY.create("scheduler", name, {"target": 0.5, "rounds": 2.5})
