from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.analytics import Candles, CvdParams, Trades
from app.analytics.cvd import bar_delta, clv_delta, compute_cvd, kline_delta, polarity_delta
from app.analytics.swings import detect_swings
from tests.analytics.real_data import cut_points, hourly_candles
from tests.analytics.synthetic import HOUR_MS, ohlc_candles

GOLDEN_BAR = {"open": 100.0, "high": 110.0, "low": 95.0, "close": 106.0, "volume": 1000.0}


def one_bar(**extra: object) -> Candles:
    return Candles.from_arrays(
        open_time=[0],
        open=[GOLDEN_BAR["open"]],
        high=[GOLDEN_BAR["high"]],
        low=[GOLDEN_BAR["low"]],
        close=[GOLDEN_BAR["close"]],
        volume=[GOLDEN_BAR["volume"]],
        interval_ms=HOUR_MS,
        **extra,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("candles_extra", "method", "side_source", "expected_delta"),
    [
        ({}, "polarity", "ohlcv_estimate", 1000.0),
        ({}, "clv", "ohlcv_estimate", 466.6666666666667),
        ({"taker_buy_volume": [620.0]}, "polarity", "kline_taker_volume", 240.0),
    ],
    ids=["polarity", "clv", "exact-from-taker-buy"],
)
def test_golden_bar_delta(
    candles_extra: dict[str, object], method: str, side_source: str, expected_delta: float
) -> None:
    result = compute_cvd(one_bar(**candles_extra), params=CvdParams(estimate_method=method))  # type: ignore[arg-type]
    assert result.side_source == side_source
    assert result.delta[0] == pytest.approx(expected_delta, rel=1e-12)
    assert result.buy_volume[0] - result.sell_volume[0] == pytest.approx(expected_delta)
    assert result.delta_pct[0] == pytest.approx(expected_delta / 1000.0)


@pytest.mark.parametrize(
    ("opens", "closes", "expected_signs"),
    [
        ([1, 2, 2, 2, 3], [2, 2, 2, 1, 3], [1, 1, 1, -1, 1]),  # dojis inherit c - previous c, then the last sign
        ([5, 5, 5], [5, 5, 4], [0, 0, -1]),  # no decided sign yet: zero delta
        ([3, 3], [3, 2], [0, -1]),
        ([4, 3, 3], [3, 3, 3.5], [-1, -1, 1]),
    ],
)
def test_polarity_doji_rules(opens: list[float], closes: list[float], expected_signs: list[int]) -> None:
    volume = np.full(len(opens), 2.0)
    result = polarity_delta(np.array(opens, float), np.array(closes, float), volume)
    assert result.tolist() == [2.0 * s for s in expected_signs]


def test_clv_is_zero_on_flat_bars() -> None:
    assert clv_delta(np.array([5.0]), np.array([5.0]), np.array([5.0]), np.array([10.0])).tolist() == [0.0]
    assert kline_delta(np.array([3.0]), np.array([10.0])).tolist() == [-4.0]


def test_trades_give_exact_delta_and_intrabar_extremes() -> None:
    candles = ohlc_candles([(10, 11, 9, 10), (10, 11, 9, 10), (10, 11, 9, 10)])
    trades = Trades.from_arrays(
        time=[-5, 0, 10, 20, 30, HOUR_MS + 1, HOUR_MS + 2, 3 * HOUR_MS],
        price=[10.0] * 8,
        qty=[7.0, 2.0, 3.0, 6.0, 1.0, 4.0, 1.0, 9.0],
        side=[1, 1, -1, -1, 1, -1, 1, 1],
    )
    result = compute_cvd(candles, trades)
    assert result.side_source == "exchange_flag"
    assert result.unassigned_trades == 2  # before the first bar and after the last close
    assert result.buy_volume.tolist() == [3.0, 1.0, 0.0]
    assert result.sell_volume.tolist() == [9.0, 4.0, 0.0]
    assert result.delta.tolist() == [-6.0, -3.0, 0.0]
    # Bar 0 running delta: +2, -1, -7, -6 -> min -7, max +2. Bar 1: -4, -3 -> min -4, max 0 (the open).
    assert result.intrabar_delta_min is not None
    assert result.intrabar_delta_max is not None
    assert result.intrabar_delta_min.tolist() == [-7.0, -4.0, 0.0]
    assert result.intrabar_delta_max.tolist() == [2.0, 0.0, 0.0]
    assert result.cvd.tolist() == [-6.0, -9.0, -9.0]
    assert result.to_dict()["delta_pct"][2] is None  # no volume


def test_cvd_resets_at_each_anchor() -> None:
    day = 86_400_000
    candles = Candles.from_arrays(
        open_time=[day - 2 * HOUR_MS, day - HOUR_MS, day, day + HOUR_MS],
        open=[1.0, 1.0, 1.0, 1.0],
        high=[2.0, 2.0, 2.0, 2.0],
        low=[0.5, 0.5, 0.5, 0.5],
        close=[2.0, 2.0, 2.0, 0.5],
        volume=[1.0, 2.0, 3.0, 4.0],
    )
    assert compute_cvd(candles, params=CvdParams(anchor="none")).cvd.tolist() == [1.0, 3.0, 6.0, 2.0]
    assert compute_cvd(candles, params=CvdParams(anchor="day")).cvd.tolist() == [1.0, 3.0, 3.0, -1.0]
    # 1970-01-02 is a Friday: the same ISO week as day 1.
    assert compute_cvd(candles, params=CvdParams(anchor="week")).cvd.tolist() == [1.0, 3.0, 6.0, 2.0]


def test_bearish_divergence_on_a_higher_high_with_lower_cvd() -> None:
    # Two swing highs (length 1): 12 then 13; the second is reached on weak (negative) delta.
    rows = [(10, 10.5, 9.5, 10.5), (10.5, 12, 10.4, 11.9), (11.9, 11.95, 10, 10.2), (10.2, 13, 10.1, 10.1),
            (10.1, 10.2, 9.0, 9.5)]  # fmt: skip
    candles = ohlc_candles(rows)
    result = compute_cvd(candles, params=CvdParams(swing_length=1))
    rows_out = result.divergences.to_dict()
    assert len(rows_out) == 1
    divergence = rows_out[0]
    assert divergence["direction"] == "bearish"
    assert divergence["anchor_time"] == 1 * HOUR_MS
    assert divergence["confirmed_time"] == 5 * HOUR_MS  # close of bar 4, which confirms the pivot at bar 3
    assert divergence["level"] == 13.0
    assert divergence["previous_price"] == 12.0
    assert divergence["cvd"] < divergence["previous_cvd"]


def test_bullish_divergence_on_a_lower_low_with_higher_cvd() -> None:
    rows = [(10, 10.5, 9.5, 9.5), (9.5, 9.6, 8, 8.1), (8.1, 10, 8.05, 9.9), (9.9, 9.95, 7, 9.9),
            (9.9, 11, 9.8, 10.5)]  # fmt: skip
    result = compute_cvd(ohlc_candles(rows), params=CvdParams(swing_length=1))
    assert [row["direction"] for row in result.divergences.to_dict()] == ["bullish"]


finite = st.floats(min_value=1.0, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(finite, finite, finite, finite, st.floats(0, 1e4)), min_size=1, max_size=40),
       st.sampled_from(["polarity", "clv"]))  # fmt: skip
def test_cvd_is_the_cumulative_delta_and_delta_is_buy_minus_sell(
    rows: list[tuple[float, float, float, float, float]], method: str
) -> None:
    table = np.array(rows)
    low, high = table[:, :4].min(axis=1), table[:, :4].max(axis=1)
    candles = Candles.from_arrays(
        open_time=np.arange(len(rows)) * HOUR_MS, open=table[:, 0], high=high, low=low, close=table[:, 3],
        volume=table[:, 4], interval_ms=HOUR_MS,
    )  # fmt: skip
    result = compute_cvd(candles, params=CvdParams(estimate_method=method))  # type: ignore[arg-type]
    np.testing.assert_allclose(result.cvd, np.cumsum(result.delta), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(result.delta, result.buy_volume - result.sell_volume, rtol=1e-12, atol=1e-9)
    assert np.all(result.buy_volume >= -1e-9)
    assert np.all(result.sell_volume >= -1e-9)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3 * HOUR_MS - 1), st.floats(0, 100), st.sampled_from([1, -1])),
                max_size=60))  # fmt: skip
def test_trade_delta_is_buy_minus_sell_per_bar(trades_rows: list[tuple[int, float, int]]) -> None:
    trades_rows.sort(key=lambda row: row[0])
    candles = ohlc_candles([(10, 11, 9, 10)] * 3)
    trades = Trades.from_arrays(
        time=[row[0] for row in trades_rows], price=[10.0] * len(trades_rows),
        qty=[row[1] for row in trades_rows], side=[row[2] for row in trades_rows],
    )  # fmt: skip
    flow = bar_delta(candles, trades)
    expected = np.zeros(3)
    for time, qty, side in trades_rows:
        expected[time // HOUR_MS] += qty * side
    np.testing.assert_allclose(flow.delta, expected, atol=1e-9)
    np.testing.assert_allclose(flow.delta, flow.buy - flow.sell, atol=1e-9)
    assert flow.intrabar_min is not None
    assert flow.intrabar_max is not None
    assert np.all(flow.intrabar_min <= np.minimum(flow.delta, 0) + 1e-9)
    assert np.all(flow.intrabar_max >= np.maximum(flow.delta, 0) - 1e-9)


def test_divergences_are_causal_under_prefix_replay() -> None:
    candles = hourly_candles()
    full = compute_cvd(candles).divergences
    assert len(full) > 20
    for count in cut_points(len(candles), 220):
        prefix = compute_cvd(candles.head(count)).divergences
        as_of = full.as_of(int(candles.close_time[count - 1]))
        assert prefix.to_dict() == as_of.to_dict(), f"divergences differ after {count} bars"


def test_divergence_swings_come_from_the_smc_detector() -> None:
    candles = hourly_candles()
    swings = detect_swings(candles.high, candles.low, 5)
    shared = compute_cvd(candles, swings=swings).divergences.to_dict()
    assert shared == compute_cvd(candles).divergences.to_dict()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"anchor": "month"}, "anchor"), ({"estimate_method": "tick"}, "estimate_method"), ({"swing_length": 0}, "swing")],
)
def test_cvd_params_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CvdParams(**kwargs)  # type: ignore[arg-type]
