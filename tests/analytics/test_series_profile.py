"""``value_area_series`` is ``profile_from_candles`` on every prefix: the very same value-area prices, bit for bit.

``test_series`` checks the value area only through the signal score; these compare the prices themselves, for
every spread, growth method and tick mode, so a faster expanding profile can be checked directly against them.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.analytics import Candles, OrderflowParams
from app.analytics.orderflow import compute_orderflow
from app.analytics.series.profile import value_area_series
from tests.analytics.real_data import cut_points, hourly_candles
from tests.analytics.synthetic import HOUR_MS, candles_from_closes, random_walk

PARAMS = [
    OrderflowParams(),
    OrderflowParams(value_area_method="single_row"),
    OrderflowParams(volume_distribution="typical"),
    OrderflowParams(volume_distribution="close", value_area_method="single_row"),
    OrderflowParams(profile_tick=5.0),
    OrderflowParams(profile_rows=7, value_area_pct=1.0),
    OrderflowParams(profile_rows=1),
    OrderflowParams(profile_rows=300, value_area_pct=0.3),
]


def prefix_value_areas(candles: Candles, params: OrderflowParams, bars: list[int]) -> tuple[list[float], list[float]]:
    """The value area ``analyze`` reports for each listed prefix (the order-flow module on ``head(bar + 1)``)."""
    low, high = [], []
    for bar in bars:
        profile = compute_orderflow(candles.head(bar + 1), params=params).profile
        low.append(profile.value_area_low)
        high.append(profile.value_area_high)
    return low, high


def integer_candles(count: int, seed: int) -> Candles:
    """Small integer prices and volumes with gaps: equal volumes, empty levels and ties on every side."""
    rng = np.random.default_rng(seed)
    close = 100.0 + np.cumsum(rng.integers(-3, 4, count))
    open_ = np.concatenate(([100.0], close[:-1]))
    return Candles.from_arrays(
        open_time=np.arange(count) * HOUR_MS, open=open_, high=np.maximum(open_, close) + rng.integers(0, 3, count),
        low=np.minimum(open_, close) - rng.integers(0, 3, count), close=close,
        volume=rng.integers(0, 5, count).astype(np.float64), interval_ms=HOUR_MS,
    )  # fmt: skip


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"{p.volume_distribution}-{p.value_area_method}")
@pytest.mark.parametrize(
    "candles",
    [
        random_walk(400, seed=5),
        integer_candles(250, seed=3),
        candles_from_closes([100 + (i % 7) - (i % 3) for i in range(200)]),
        candles_from_closes([100.0] * 30),
    ],
    ids=["walk", "integers", "repeating", "flat"],
)
def test_every_prefix_has_the_value_area_of_its_own_profile(candles: Candles, params: OrderflowParams) -> None:
    low, high = value_area_series(candles, params)
    bars = list(range(len(candles)))
    expected_low, expected_high = prefix_value_areas(candles, params, bars)
    assert low.tolist() == expected_low
    assert high.tolist() == expected_high


@pytest.mark.parametrize("params", PARAMS[:4], ids=lambda p: f"{p.volume_distribution}-{p.value_area_method}")
def test_real_candles_at_cut_points(params: OrderflowParams) -> None:
    candles = hourly_candles()
    bars = [bar - 1 for bar in cut_points(len(candles), 60)]
    low, high = value_area_series(candles, params)
    expected_low, expected_high = prefix_value_areas(candles, params, bars)
    assert low[bars].tolist() == expected_low
    assert high[bars].tolist() == expected_high


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"{p.volume_distribution}-{p.value_area_method}")
def test_a_later_first_bar_computes_the_same_bits_from_it_on_and_nothing_before(params: OrderflowParams) -> None:
    # Starts at the first bar, inside tick runs and blocks, on a bar that changes the profile's range, at the last
    # bar and past it: the rebuilt sums must equal the running ones exactly.
    candles = random_walk(400, seed=11)
    low, high = value_area_series(candles, params)
    moved = np.flatnonzero(np.diff(np.minimum.accumulate(candles.low)) != 0) + 1
    for first in sorted({0, 1, 57, 200, int(moved[-1]), 399, 400}):
        later_low, later_high = value_area_series(candles, params, first)
        assert np.isnan(later_low[:first]).all()
        assert np.isnan(later_high[:first]).all()
        assert later_low[first:].tolist() == low[first:].tolist(), first
        assert later_high[first:].tolist() == high[first:].tolist(), first
