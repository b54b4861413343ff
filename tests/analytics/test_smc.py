from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from app.analytics import SmcParams
from app.analytics.liquidity import equal_levels, previous_period_levels
from app.analytics.rangequery import PriceTables
from app.analytics.smc import compute_smc
from app.analytics.swings import detect_swings
from tests.analytics.real_data import cut_points, hourly_candles
from tests.analytics.synthetic import HOUR_MS, candles_from_closes, ohlc_candles

H = HOUR_MS

# (open, high, low, close); swing length 1. Worked by hand in the comments of each expectation below.
STRUCTURE_ROWS = [
    (9.5, 10, 9, 9.8),
    (9.8, 12, 10, 11.8),  # swing high 12 (confirmed by bar 2)
    (11.8, 11.8, 8, 8.5),  # swing low 8 (confirmed by bar 3); bearish candle -> bullish order block
    (8.5, 10, 9, 9.5),
    (9.5, 13, 9.5, 12.5),  # close 12.5 > 12: bullish BOS; swing high 13 (confirmed by bar 5)
    (12.5, 12.8, 11, 11.2),  # bullish FVG [10, 11] (high of bar 3 < low of bar 5)
    (11.2, 11.5, 7, 7.5),  # close 7.5 < 8: bearish CHoCH; swing low 7 (confirmed by bar 7)
    (7.5, 8.5, 7.2, 8.2),  # bearish FVG [8.5, 11] (low of bar 5 > high of bar 7)
]


def structure_fixture() -> dict[str, Any]:
    candles = ohlc_candles([(o, max(o, h, c), min(o, lo, c), c) for o, h, lo, c in STRUCTURE_ROWS])
    return compute_smc(candles, SmcParams(swing_length=1)).to_dict()


def event(kind: str, direction: str, anchor_bar: int, confirm_bar: int, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "kind": kind, "direction": direction, "anchor_time": anchor_bar * H, "confirmed_time": (confirm_bar + 1) * H,
        "level": None, "top": None, "bottom": None,
        "mitigated_time": None, "broken_time": None, "swept_time": None, "status": "active",
    }  # fmt: skip
    row.update(fields)
    return row


def closes_at(bar: int) -> int:
    return (bar + 1) * H


def test_golden_swings() -> None:
    assert structure_fixture()["swings"] == [
        event("swing_high", "high", 1, 2, level=12.0, swept_time=closes_at(4), broken_time=closes_at(4),
              status="broken"),
        event("swing_low", "low", 2, 3, level=8.0, swept_time=closes_at(6), broken_time=closes_at(6),
              status="broken"),
        event("swing_high", "high", 4, 5, level=13.0),
        event("swing_low", "low", 6, 7, level=7.0),
    ]  # fmt: skip


def test_golden_structure_breaks() -> None:
    assert structure_fixture()["structure"] == [
        event("bos", "bullish", 1, 4, level=12.0),
        event("choch", "bearish", 2, 6, level=8.0),
    ]
    assert structure_fixture()["trend"] == "bearish"


def test_golden_order_blocks() -> None:
    assert structure_fixture()["order_blocks"] == [
        event("order_block", "bullish", 2, 4, top=11.8, bottom=8.0, mitigated_time=closes_at(5),
              broken_time=closes_at(6), status="broken"),
        event("order_block", "bearish", 4, 6, top=13.0, bottom=9.5),
    ]  # fmt: skip


def test_golden_fair_value_gaps() -> None:
    assert structure_fixture()["fair_value_gaps"] == [
        event("fvg", "bullish", 4, 5, top=11.0, bottom=10.0, mitigated_time=closes_at(6), broken_time=closes_at(6),
              status="broken"),
        event("fvg", "bearish", 6, 7, top=11.0, bottom=8.5),
    ]  # fmt: skip


def test_fvg_minimum_size_filters_small_gaps() -> None:
    candles = ohlc_candles([(o, max(o, h, c), min(o, lo, c), c) for o, h, lo, c in STRUCTURE_ROWS] * 3)
    result = compute_smc(candles, SmcParams(swing_length=1, fvg_min_size_atr=50.0))
    assert len(result.fair_value_gaps) == 0


def test_golden_equal_highs_are_swept_and_broken() -> None:
    candles = ohlc_candles([
        (10, 10.5, 9.5, 10), (10, 12, 9.8, 11.5), (11.5, 11.6, 10, 10.5), (10.5, 12.05, 10.4, 11.8),
        (11.8, 11.9, 10.8, 11), (11, 12.3, 10.9, 12.1),
    ])  # fmt: skip
    tables = PriceTables(candles.high, candles.low, candles.close)
    swings = detect_swings(candles.high, candles.low, 1)
    levels = equal_levels(candles, swings, np.ones(len(candles)), 0.1, tables).to_dict()
    assert levels == [
        event("equal_highs", "high", 1, 4, level=12.05, swept_time=closes_at(5), broken_time=closes_at(5),
              status="broken"),
    ]  # fmt: skip
    # A tighter tolerance than the 0.05 difference finds nothing; so does a missing ATR.
    assert len(equal_levels(candles, swings, np.ones(len(candles)), 0.04, tables)) == 0
    assert len(equal_levels(candles, swings, np.full(len(candles), np.nan), 0.1, tables)) == 0


def test_equal_lows_mirror_equal_highs() -> None:
    candles = ohlc_candles([
        (10, 10.5, 9.5, 10), (10, 10.2, 8, 8.5), (8.5, 10, 8.4, 9.5), (9.5, 9.6, 7.95, 8.2),
        (8.2, 9.2, 8.1, 9), (9, 9.1, 7.7, 7.8),
    ])  # fmt: skip
    tables = PriceTables(candles.high, candles.low, candles.close)
    swings = detect_swings(candles.high, candles.low, 1)
    rows = equal_levels(candles, swings, np.ones(len(candles)), 0.1, tables).to_dict()
    assert [(row["kind"], row["level"], row["status"]) for row in rows] == [("equal_lows", 7.95, "broken")]


def test_previous_day_levels_are_confirmed_at_the_day_close_and_running_periods_are_omitted() -> None:
    closes = [100 + i for i in range(24)] + [90 + (i % 5) for i in range(24)] + [130.0]
    candles = candles_from_closes(closes, spread=0.5)
    tables = PriceTables(candles.high, candles.low, candles.close)
    rows = previous_period_levels(candles, tables).to_dict()
    assert [(r["kind"], r["anchor_time"], r["confirmed_time"], r["level"]) for r in rows] == [
        ("prev_day_high", 0, 24 * H, 123.5),
        ("prev_day_low", 0, 24 * H, 99.5),
        ("prev_day_high", 24 * H, 48 * H, 123.5),  # bar 24 opens at the previous close, 123
        ("prev_day_low", 24 * H, 48 * H, 89.5),
    ]
    day_one_high = rows[0]
    assert day_one_high["swept_time"] == 49 * H  # the last bar trades up to 130.5
    assert all(r["kind"].startswith("prev_day") for r in rows)  # the week is still running


@pytest.mark.parametrize("swing_length", [2, 5])
def test_smc_is_causal_under_prefix_replay(swing_length: int) -> None:
    candles = hourly_candles()
    params = SmcParams(swing_length=swing_length)
    full = compute_smc(candles, params)
    assert len(full.structure) > 100
    assert len(full.liquidity) > 10
    for count in cut_points(len(candles), 210):
        close = int(candles.close_time[count - 1])
        prefix = compute_smc(candles.head(count), params).to_dict()
        assert prefix == full.as_of(close).to_dict(), f"SMC events differ after {count} bars"


def test_too_few_bars_give_no_events() -> None:
    result = compute_smc(candles_from_closes([100.0]), SmcParams(swing_length=3)).to_dict()
    assert result["trend"] is None
    assert all(result[name] == [] for name in ("swings", "fair_value_gaps", "structure", "order_blocks"))


def test_flat_bars_have_no_swings_or_gaps() -> None:
    candles = ohlc_candles([(5.0, 5.0, 5.0, 5.0)] * 30)
    result = compute_smc(candles)
    assert len(result.swings) == len(result.fair_value_gaps) == len(result.structure) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"swing_length": 0}, "swing_length"),
        ({"fvg_min_size_atr": -1.0}, "fvg_min_size_atr"),
        ({"liquidity_atr_multiple": 0.0}, "liquidity_atr_multiple"),
        ({"atr_period": 1}, "atr_period"),
    ],
)
def test_smc_params_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SmcParams(**kwargs)  # type: ignore[arg-type]


def test_swing_detector_matches_its_definition() -> None:
    high = np.array([10, 11, 14, 12, 11, 13, 13, 12, 10, 11], dtype=np.float64)
    swings = detect_swings(high, high - 1, 2)
    # 14 at bar 2; of the equal 13s only the second has no equal-or-higher bar to its right.
    assert swings.index[swings.is_high].tolist() == [2, 6]
    assert swings.index[~swings.is_high].tolist() == [4]
    assert swings.confirmed_index.tolist() == [4, 6, 8]
    with pytest.raises(ValueError, match="at least 1"):
        detect_swings(high, high, 0)
