from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.analytics import FibonacciParams
from app.analytics.fibonacci import (
    compute_fibonacci,
    extension_levels,
    fibonacci_from_swings,
    retracement_levels,
    three_point_extension,
)
from app.analytics.swings import detect_swings
from tests.analytics.real_data import cut_points, hourly_candles
from tests.analytics.synthetic import HOUR_MS, ohlc_candles


@pytest.mark.parametrize(
    ("kind", "direction", "ratio", "expected"),
    [
        ("retracement", "up", 0.618, 138.2),
        ("extension", "up", 1.618, 261.8),
        ("retracement", "down", 0.236, 123.6),
        ("retracement", "up", 0.5, 150.0),
        ("extension", "down", 1.272, 72.8),
    ],
)
def test_golden_two_point_levels(kind: str, direction: str, ratio: float, expected: float) -> None:
    compute = retracement_levels if kind == "retracement" else extension_levels
    assert compute(100.0, 200.0, np.array([ratio]), direction)[0] == pytest.approx(expected, rel=1e-12)


def test_golden_three_point_extension() -> None:
    assert three_point_extension(100.0, 200.0, 150.0, np.array([1.618]))[0] == pytest.approx(311.8, rel=1e-12)


def swing_fixture() -> tuple[object, ...]:
    # Swing length 1: low 100 at bar 1, high 200 at bar 3, low 150 at bar 5, confirmed one bar later each.
    rows = [(120, 125, 110, 115), (115, 116, 100, 105), (105, 180, 104, 175), (175, 200, 170, 190),
            (190, 191, 160, 165), (165, 170, 150, 160), (160, 175, 155, 172)]  # fmt: skip
    return (ohlc_candles(rows),)


def test_anchors_are_the_last_two_confirmed_opposite_swings() -> None:
    (candles,) = swing_fixture()
    result = compute_fibonacci(candles, FibonacciParams(swing_length=1))  # type: ignore[arg-type]
    data = result.to_dict()
    assert data["direction"] == "down"  # the latest swing is the low at 150
    assert [(a["role"], a["side"], a["price"], a["time"]) for a in data["anchors"]] == [
        ("A", "low", 100.0, 1 * HOUR_MS),
        ("B", "high", 200.0, 3 * HOUR_MS),
        ("C", "low", 150.0, 5 * HOUR_MS),
    ]
    assert data["confirmed_time"] == 7 * HOUR_MS  # close of bar 6
    assert data["three_point_extensions"][2] == {"ratio": 1.618, "price": pytest.approx(311.8)}
    assert data["retracements"][0]["price"] == pytest.approx(150 + 0.236 * 50)
    assert data["last_close"] == 172.0
    nearest = data["nearest"]
    assert nearest is not None
    assert nearest["kind"] == "retracement"
    assert nearest["ratio"] == 0.382
    assert nearest["price"] == pytest.approx(169.1)


def test_no_levels_without_two_opposite_swings() -> None:
    candles = ohlc_candles([(10, 11, 9, 10)] * 3)
    data = compute_fibonacci(candles).to_dict()
    assert data["direction"] is None
    assert data["nearest"] is None
    assert data["retracements"] == []


@settings(max_examples=60, deadline=None)
@given(st.floats(1, 1e6), st.floats(0.01, 1e6), st.sampled_from(["up", "down"]))
def test_levels_are_monotonic_in_the_ratio(low: float, span: float, direction: str) -> None:
    high = low + span
    retracements = retracement_levels(low, high, np.array([0.236, 0.382, 0.5, 0.618, 0.786]), direction)
    extensions = extension_levels(low, high, np.array([1.272, 1.414, 1.618, 2.0, 2.618]), direction)
    step = -1 if direction == "up" else 1  # an up leg retraces downwards and extends upwards
    assert np.all(np.sign(np.diff(retracements)) == step)
    assert np.all(np.sign(np.diff(extensions)) == -step)
    assert np.all((retracements >= low) & (retracements <= high))


def test_fibonacci_is_causal_under_prefix_replay() -> None:
    candles = hourly_candles()
    full_swings = detect_swings(candles.high, candles.low, 5)
    changes = 0
    previous = None
    for count in cut_points(len(candles), 240):
        last = count - 1
        prefix = compute_fibonacci(candles.head(count)).to_dict()
        expected = fibonacci_from_swings(
            full_swings.confirmed_by(last), candles.open_time, candles.close_time, float(candles.close[last])
        ).to_dict()
        assert prefix == expected, f"Fibonacci differs after {count} bars"
        assert prefix["confirmed_time"] is None or prefix["confirmed_time"] <= int(candles.close_time[last])
        changes += prefix["confirmed_time"] != previous
        previous = prefix["confirmed_time"]
    assert changes > 100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"swing_length": 0}, "swing_length"),
        ({"retracements": ()}, "must not be empty"),
        ({"retracements": (0.5, 1.5)}, "retracements must be numbers"),
        ({"extensions": (1.618, 1.272)}, "strictly increasing"),
    ],
)
def test_fibonacci_params_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FibonacciParams(**kwargs)  # type: ignore[arg-type]
