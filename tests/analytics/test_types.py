from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from app.analytics import Candles, Liquidations, Trades
from app.analytics.types import (
    json_floats,
    taker_side_from_binance_maker_flag,
    taker_side_from_labels,
    utc_day_start,
    utc_week_start,
)

GOOD: dict[str, Any] = {
    "open_time": [0, 60_000, 120_000],
    "open": [10.0, 11.0, 12.0],
    "high": [11.0, 12.0, 13.0],
    "low": [9.0, 10.0, 11.0],
    "close": [11.0, 12.0, 12.5],
    "volume": [1.0, 2.0, 3.0],
}


def test_interval_is_inferred_as_the_median_spacing() -> None:
    candles = Candles.from_arrays(**{**GOOD, "open_time": [0, 60_000, 240_000]})
    assert candles.interval_ms == 120_000
    assert candles.close_time.tolist() == [120_000, 180_000, 360_000]


def test_columns_are_copied_and_read_only() -> None:
    close = np.array(GOOD["close"])
    candles = Candles.from_arrays(**{**GOOD, "close": close})
    close[0] = 99.0
    assert candles.close[0] == 11.0
    with pytest.raises(ValueError, match="read-only"):
        candles.close[0] = 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"close": [11.0, float("nan"), 12.5]}, r"close\[1\] is not a finite number"),
        ({"high": [11.0, float("inf"), 13.0]}, r"high\[1\] is not a finite number"),
        ({"low": [9.0, 10.0, 12.2]}, r"low\[2\] is above min\(open, close\)"),
        ({"high": [11.0, 11.5, 13.0]}, r"high\[1\] is below max\(open, close\)"),
        ({"volume": [1.0, -2.0, 3.0]}, r"volume\[1\] is negative"),
        ({"open_time": [0, 60_000, 60_000]}, r"open_time\[2\] is not after"),
        ({"open_time": [-5, 60_000, 120_000]}, r"open_time\[0\] is negative"),
        ({"taker_buy_volume": [0.5, 2.5, 1.0]}, r"taker_buy_volume\[1\] is outside"),
        ({"trade_count": [1, -1, 3]}, r"trade_count\[1\] is negative"),
        ({"trade_count": [1, 2]}, "trade_count has 2 values"),
        ({"close": [1.0, 2.0]}, "close has 2 values, expected 3"),
        ({"interval_ms": 0}, "interval_ms must be positive"),
    ],
)
def test_invalid_candles_name_the_offending_element(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Candles.from_arrays(**{**GOOD, **change})


def test_one_candle_needs_an_explicit_interval() -> None:
    single = {name: values[:1] for name, values in GOOD.items()}
    with pytest.raises(ValueError, match="interval_ms is required"):
        Candles.from_arrays(**single)
    assert len(Candles.from_arrays(**single, interval_ms=60_000)) == 1


def test_empty_candles_are_rejected() -> None:
    with pytest.raises(ValueError, match="at least one candle"):
        Candles.from_arrays(open_time=[], open=[], high=[], low=[], close=[], volume=[])


def test_head_keeps_the_interval_and_optional_columns() -> None:
    candles = Candles.from_arrays(**GOOD, taker_buy_volume=[0.5, 1.0, 1.5], trade_count=[1, 2, 3])
    first = candles.head(2)
    assert len(first) == 2
    assert first.interval_ms == candles.interval_ms
    assert first.taker_buy_volume is not None
    assert first.taker_buy_volume.tolist() == [0.5, 1.0]
    assert first.trade_count is not None
    assert first.trade_count.tolist() == [1, 2]
    with pytest.raises(ValueError, match="count must be"):
        candles.head(0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"side": [1, 0]}, r"side\[1\] is not \+1"),
        ({"price": [1.0, 0.0]}, r"price\[1\] is not positive"),
        ({"qty": [1.0, -1.0]}, r"qty\[1\] is negative"),
        ({"time": [5, 4]}, r"time\[1\] goes back"),
        ({"side": [1]}, "side has 1 values"),
    ],
)
def test_invalid_trades_are_rejected(change: dict[str, Any], message: str) -> None:
    good: dict[str, Any] = {"time": [1, 1], "price": [1.0, 1.0], "qty": [1.0, 1.0], "side": [1, -1]}
    with pytest.raises(ValueError, match=message):
        Trades.from_arrays(**{**good, **change})


def test_liquidations_validate_like_trades() -> None:
    liquidations = Liquidations.from_arrays(time=[1, 2], qty=[3.0, 4.0], side=[-1, 1])
    assert liquidations.side.dtype == np.int8
    with pytest.raises(ValueError, match="side"):
        Liquidations.from_arrays(time=[1], qty=[1.0], side=[2])


def test_binance_maker_flag_means_the_taker_sold() -> None:
    assert taker_side_from_binance_maker_flag([True, False]).tolist() == [-1, 1]


def test_side_labels_from_bybit_and_coinapi() -> None:
    assert taker_side_from_labels(["Buy", "Sell", "BUY_ESTIMATED", "SELL_ESTIMATED"]).tolist() == [1, -1, 1, -1]
    with pytest.raises(ValueError, match="neither a buy nor a sell"):
        taker_side_from_labels(["UNKNOWN"])


def test_utc_period_starts() -> None:
    # 2024-01-03 (a Wednesday) 15:00 UTC -> day 2024-01-03 00:00, ISO week Monday 2024-01-01 00:00.
    wednesday = np.array([1_704_294_000_000])
    assert utc_day_start(wednesday).tolist() == [1_704_240_000_000]
    assert utc_week_start(wednesday).tolist() == [1_704_067_200_000]


def test_json_floats_turn_nan_and_inf_into_none() -> None:
    assert json_floats(np.array([1.5, np.nan, np.inf])) == [1.5, None, None]
