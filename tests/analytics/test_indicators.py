from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import talib

from app.analytics import Candles, IndicatorParams
from app.analytics.indicators import atr, bollinger, compute_indicators, ema, macd, rsi, sma, vwap
from app.analytics.types import FloatArray
from tests.analytics.real_data import hourly_candles

RTOL = 1e-9


def assert_matches_talib(ours: FloatArray, reference: FloatArray) -> None:
    ours, reference = np.asarray(ours), np.asarray(reference)
    assert ours.shape == reference.shape
    # Same first valid index: NaN exactly where TA-Lib has no value.
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(reference))
    valid = ~np.isnan(reference)
    assert valid.any()
    np.testing.assert_allclose(ours[valid], reference[valid], rtol=RTOL, atol=0)


Case = tuple[str, Callable[[Candles], FloatArray], Callable[[Candles], FloatArray]]
CASES: list[Case] = [
    ("sma20", lambda c: sma(c.close, 20), lambda c: talib.SMA(c.close, 20)),
    ("sma200", lambda c: sma(c.close, 200), lambda c: talib.SMA(c.close, 200)),
    ("ema20", lambda c: ema(c.close, 20), lambda c: talib.EMA(c.close, 20)),
    ("ema200", lambda c: ema(c.close, 200), lambda c: talib.EMA(c.close, 200)),
    ("rsi14", lambda c: rsi(c.close, 14), lambda c: talib.RSI(c.close, 14)),
    ("rsi2", lambda c: rsi(c.close, 2), lambda c: talib.RSI(c.close, 2)),
    ("atr14", lambda c: atr(c.high, c.low, c.close, 14), lambda c: talib.ATR(c.high, c.low, c.close, 14)),
    ("macd", lambda c: macd(c.close)[0], lambda c: talib.MACD(c.close, 12, 26, 9)[0]),
    ("macd_signal", lambda c: macd(c.close)[1], lambda c: talib.MACD(c.close, 12, 26, 9)[1]),
    ("macd_hist", lambda c: macd(c.close)[2], lambda c: talib.MACD(c.close, 12, 26, 9)[2]),
    ("macd_5_35_5_hist", lambda c: macd(c.close, 5, 35, 5)[2], lambda c: talib.MACD(c.close, 5, 35, 5)[2]),
    (
        "bb_upper",
        lambda c: bollinger(c.close, 20, 2.0)[0],
        lambda c: talib.BBANDS(c.close, 20, 2.0, 2.0)[0],
    ),
    (
        "bb_middle",
        lambda c: bollinger(c.close, 20, 2.0)[1],
        lambda c: talib.BBANDS(c.close, 20, 2.0, 2.0)[1],
    ),
    (
        "bb_lower",
        lambda c: bollinger(c.close, 20, 2.0)[2],
        lambda c: talib.BBANDS(c.close, 20, 2.0, 2.0)[2],
    ),
]


@pytest.mark.parametrize(("name", "ours", "reference"), CASES, ids=[case[0] for case in CASES])
def test_indicator_matches_talib_on_real_hourly_candles(
    name: str, ours: Callable[[Candles], FloatArray], reference: Callable[[Candles], FloatArray]
) -> None:
    candles = hourly_candles()
    assert_matches_talib(ours(candles), reference(candles))


@pytest.mark.parametrize("length", [1, 2, 14, 15, 26, 33, 34])
def test_short_inputs_have_talib_first_valid_index(length: int) -> None:
    rng = np.random.default_rng(length)
    close = 100 + np.cumsum(rng.standard_normal(length))
    high, low = close + 1, close - 1
    assert_matches_or_all_nan(sma(close, 14), talib.SMA(close, 14))
    assert_matches_or_all_nan(ema(close, 14), talib.EMA(close, 14))
    assert_matches_or_all_nan(rsi(close, 14), talib.RSI(close, 14))
    assert_matches_or_all_nan(atr(high, low, close, 14), talib.ATR(high, low, close, 14))
    for ours, reference in zip(macd(close), talib.MACD(close, 12, 26, 9), strict=True):
        assert_matches_or_all_nan(ours, reference)
    for ours, reference in zip(bollinger(close, 14), talib.BBANDS(close, 14, 2.0, 2.0), strict=True):
        assert_matches_or_all_nan(ours, reference)


def assert_matches_or_all_nan(ours: FloatArray, reference: FloatArray) -> None:
    if np.isnan(reference).all():
        assert np.isnan(ours).all()
    else:
        assert_matches_talib(ours, reference)


def test_flat_prices_give_zero_deviation_and_talib_rsi() -> None:
    close = np.full(40, 50.0)
    upper, middle, lower = bollinger(close, 20)
    assert upper[19] == middle[19] == lower[19] == 50.0
    assert_matches_talib(rsi(close, 14), talib.RSI(close, 14))


def test_vwap_restarts_each_utc_day() -> None:
    hour = 3_600_000
    candles = Candles.from_arrays(
        open_time=[22 * hour, 23 * hour, 24 * hour, 25 * hour],
        open=[10.0, 10.0, 20.0, 20.0],
        high=[10.0, 13.0, 20.0, 23.0],
        low=[10.0, 10.0, 20.0, 20.0],
        close=[10.0, 13.0, 20.0, 23.0],
        volume=[1.0, 3.0, 0.0, 2.0],
    )
    # Typical prices: 10, 12, 20, 22. Day 1: (10·1 + 12·3) / 4 = 11.5. Day 2 starts with no volume.
    np.testing.assert_allclose(vwap(candles, "day")[:2], [10.0, 11.5])
    assert np.isnan(vwap(candles, "day")[2])
    assert vwap(candles, "day")[3] == pytest.approx(22.0)
    assert vwap(candles, "none")[3] == pytest.approx((10 + 36 + 44) / 6)
    assert vwap(candles, "week")[3] == pytest.approx((10 + 36 + 44) / 6)


def test_compute_indicators_serialises_nan_as_none() -> None:
    hour = 3_600_000
    close = 100 + np.arange(30, dtype=np.float64)
    candles = Candles.from_arrays(
        open_time=np.arange(30) * hour, open=close, high=close + 1, low=close - 1, close=close, volume=np.ones(30)
    )
    result = compute_indicators(candles).to_dict()
    assert result["sma"][18] is None
    assert result["sma"][19] == pytest.approx(109.5)
    assert result["macd"][-1] is None  # needs 34 bars
    assert result["params"]["vwap_anchor"] == "day"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sma_period": 1}, "sma_period"),
        ({"macd_fast": 30, "macd_slow": 26}, "macd_fast must be smaller"),
        ({"macd_signal": 0}, "macd_signal"),
        ({"bollinger_period": 1}, "bollinger_period"),
        ({"bollinger_stddev": 0.0}, "bollinger_stddev"),
        ({"vwap_anchor": "month"}, "vwap_anchor"),
    ],
)
def test_indicator_params_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IndicatorParams(**kwargs)  # type: ignore[arg-type]
