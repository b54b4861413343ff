"""The evaluator: golden cases per node kind, the sentences, and snapshots built from real analyze() results."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from app.alerts.conditions import parse_condition
from app.alerts.evaluator import BarEvent, BarSnapshot, describe_condition, describe_firing, evaluate, number
from app.alerts.snapshot import snapshot_at_last_bar
from app.analytics.engine import analyze
from tests.analytics.real_data import hourly_candles
from tests.analytics.synthetic import random_walk

PREVIOUS = BarSnapshot(
    close_time=1_000,
    bias="neutral",
    score=0.05,
    confidence=0.1,
    close=64_000.0,
    rsi=68.0,
    cvd=-10.0,
    delta=-2.0,
    volume=40.0,
    fibonacci={0.618: 64_100.0, 1.618: 66_000.0},
    stop=63_000.0,
    target=64_150.0,
)
CURRENT = BarSnapshot(
    close_time=2_000,
    bias="long",
    score=0.42,
    confidence=0.6,
    close=64_210.0,
    rsi=71.5,
    cvd=5.0,
    delta=15.0,
    volume=55.0,
    events=(
        BarEvent("choch", "bullish", 64_210.0, 64_210.0),
        BarEvent("cvd_divergence", "bullish", 63_900.0, 63_900.0),
        BarEvent("fvg", "bearish", 64_300.0, 64_450.0),
        BarEvent("equal_lows", None, 63_500.0, 63_500.0),
    ),
    fibonacci={0.618: 64_120.0, 1.618: 66_000.0},
    stop=63_200.0,
    target=64_500.0,
)


def parse(raw: dict[str, Any]) -> Any:
    return parse_condition(raw, max_depth=8, max_nodes=64)


GOLDEN: list[tuple[dict[str, Any], bool, bool]] = [
    # (condition, with the previous bar, on a first evaluation (no previous bar))
    ({"field": "bias", "op": "eq", "value": "long"}, True, True),
    ({"field": "bias", "op": "ne", "value": "long"}, False, False),
    ({"field": "bias", "op": "changes_to", "value": "long"}, True, False),
    ({"field": "bias", "op": "changes_to", "value": "neutral"}, False, False),
    ({"field": "score", "op": "gt", "value": 0.42}, False, False),
    ({"field": "score", "op": "gte", "value": 0.42}, True, True),
    ({"field": "confidence", "op": "lt", "value": 0.6}, False, False),
    ({"field": "confidence", "op": "lte", "value": 0.6}, True, True),
    ({"field": "volume", "op": "eq", "value": 55}, True, True),
    ({"field": "rsi", "op": "crosses_above", "value": 70}, True, False),
    ({"field": "rsi", "op": "crosses_above", "value": 68}, True, False),  # at the level before, through it now
    ({"field": "rsi", "op": "crosses_above", "value": 72}, False, False),
    ({"field": "rsi", "op": "crosses_below", "value": 70}, False, False),
    ({"field": "cvd", "op": "crosses_above", "value": 0}, True, False),
    ({"field": "delta", "op": "crosses_below", "value": 0}, False, False),
    ({"field": "delta", "op": "changes_to", "value": 15}, True, False),
    ({"event": "choch", "direction": "bullish"}, True, True),
    ({"event": "choch"}, True, True),
    ({"event": "choch", "direction": "bearish"}, False, False),
    ({"event": "bos"}, False, False),
    ({"event": "fvg", "direction": "bearish"}, True, True),
    ({"event": "equal_lows"}, True, True),
    ({"event": "equal_highs"}, False, False),
    ({"event": "cvd_divergence", "direction": "bullish"}, True, True),
    ({"level": "fibonacci", "ratio": 0.618, "op": "crosses_above"}, True, False),
    ({"level": "fibonacci", "ratio": 1.618, "op": "crosses_above"}, False, False),
    ({"level": "fibonacci", "ratio": 0.786, "op": "crosses_above"}, False, False),  # not among the bar's levels
    ({"level": "stop", "op": "crosses_below"}, False, False),
    ({"level": "target", "op": "crosses_above"}, False, False),  # 64 000 ≤ 64 150 before, 64 210 < 64 500 now
    ({"all": [{"field": "bias", "op": "changes_to", "value": "long"}, {"event": "choch"}]}, True, False),
    ({"any": [{"event": "bos"}, {"field": "rsi", "op": "gt", "value": 71}]}, True, True),
    ({"not": {"event": "bos"}}, True, True),
    ({"not": {"field": "rsi", "op": "crosses_above", "value": 70}}, False, True),
    ({"all": [{"any": [{"event": "bos"}, {"not": {"event": "fvg"}}]}, {"event": "choch"}]}, False, False),
]


@pytest.mark.parametrize(("raw", "expected", "first"), GOLDEN)
def test_golden_cases(raw: dict[str, Any], expected: bool, first: bool) -> None:
    condition = parse(raw)
    assert evaluate(condition, CURRENT, PREVIOUS) is expected
    assert evaluate(condition, CURRENT, None) is first


def test_a_field_without_a_value_makes_every_predicate_on_it_false() -> None:
    warming = replace(CURRENT, rsi=None)
    for op in ("eq", "ne", "gt", "lt", "crosses_above", "changes_to"):
        assert not evaluate(parse({"field": "rsi", "op": op, "value": 50}), warming, PREVIOUS), op
    no_levels = replace(CURRENT, stop=None, target=None, fibonacci={})
    assert not evaluate(parse({"level": "fibonacci", "ratio": 0.618, "op": "crosses_above"}), no_levels, PREVIOUS)
    assert not evaluate(parse({"level": "stop", "op": "crosses_above"}), no_levels, PREVIOUS)


def test_a_level_cross_compares_each_bar_with_its_own_level() -> None:
    """Like TradingView's `ta.crossover(close, level)`: the stop moves with the signal, each bar against its own."""
    before = replace(PREVIOUS, close=63_100.0, stop=63_000.0)
    now = replace(CURRENT, close=62_900.0, stop=62_950.0)
    assert evaluate(parse({"level": "stop", "op": "crosses_below"}), now, before)
    assert not evaluate(parse({"level": "stop", "op": "crosses_below"}), replace(now, stop=62_800.0), before)


def test_the_issue_sentence() -> None:
    condition = parse(
        {
            "all": [
                {"field": "bias", "op": "changes_to", "value": "long"},
                {"event": "choch", "direction": "bullish"},
                {"event": "cvd_divergence", "direction": "bullish"},
            ]
        }
    )
    assert evaluate(condition, CURRENT, PREVIOUS)
    sentence = describe_firing(condition, CURRENT, PREVIOUS)
    assert sentence == "bias turned long: bullish CHoCH at 64 210, CVD divergence bullish"


@pytest.mark.parametrize(
    ("raw", "sentence"),
    [
        ({"field": "rsi", "op": "crosses_above", "value": 70}, "RSI crossed above 70 (71.5)"),
        ({"field": "score", "op": "gte", "value": 0.4}, "score ≥ 0.4 (0.42)"),
        ({"field": "bias", "op": "eq", "value": "long"}, "bias is long"),
        ({"event": "fvg"}, "bearish FVG at 64 300 to 64 450"),
        ({"event": "equal_lows"}, "equal lows at 63 500"),
        (
            {"level": "fibonacci", "ratio": 0.618, "op": "crosses_above"},
            "close crossed above the 0.618 Fibonacci level at 64 120",
        ),
        ({"any": [{"event": "bos"}, {"not": {"event": "bos"}}]}, "not BOS"),
    ],
)
def test_sentences_name_what_fired(raw: dict[str, Any], sentence: str) -> None:
    condition = parse(raw)
    assert evaluate(condition, CURRENT, PREVIOUS)
    assert describe_firing(condition, CURRENT, PREVIOUS) == sentence


def test_the_rule_in_words() -> None:
    condition = parse(
        {
            "any": [
                {
                    "all": [
                        {"field": "rsi", "op": "lt", "value": 30},
                        {"event": "liquidity_sweep", "direction": "bullish"},
                    ]
                },
                {"not": {"level": "target", "op": "crosses_below"}},
            ]
        }
    )
    assert describe_condition(condition) == (
        "(RSI < 30 and bullish liquidity sweep) or not close crosses below the signal's first target"
    )


@pytest.mark.parametrize(
    ("value", "text"), [(64_210.0, "64 210"), (64_210.5, "64 210.5"), (1_234_567.891, "1 234 567.89"), (0.618, "0.618")]
)
def test_numbers_read_like_prices(value: float, text: str) -> None:
    assert number(value) == text


def _confirmed_at_last_bar(table: Any, close_time: int) -> set[tuple[str, str]]:
    return {
        (table.kinds[int(kind)], "bullish" if direction > 0 else "bearish")
        for kind, direction, confirmed in zip(table.kind, table.direction, table.confirmed_time, strict=True)
        if confirmed == close_time
    }


def test_snapshots_of_real_analyses_see_the_events_confirmed_at_their_last_bar() -> None:
    """Windows of the real hourly candles, each analysed as the loop will: the snapshot's structure breaks and CVD
    divergences are exactly the engine's rows confirmed at the window's last close."""
    candles = hourly_candles()
    found = 0
    for end in range(300, 1500, 11):
        window = candles.head(end)
        result = analyze(window)
        snapshot = snapshot_at_last_bar(result, window)
        assert snapshot.close_time == result.last_close_time
        assert (snapshot.bias, snapshot.score) == (result.signal.bias, result.signal.score)
        assert snapshot.close == float(window.close[-1])
        assert snapshot.volume == float(window.volume[-1])
        assert result.indicators is not None
        assert result.smc is not None
        assert result.cvd is not None
        assert snapshot.rsi == pytest.approx(float(result.indicators.rsi[-1]))
        expected = _confirmed_at_last_bar(result.smc.structure, result.last_close_time)
        expected |= _confirmed_at_last_bar(result.cvd.divergences, result.last_close_time)
        seen = {(e.kind, e.direction) for e in snapshot.events if e.kind in ("bos", "choch", "cvd_divergence")}
        assert seen == expected
        found += bool(expected)
    assert found >= 5, "too few windows end on a confirmed event for the comparison to mean anything"


def test_snapshot_without_candles_falls_back_to_the_modules() -> None:
    candles = random_walk(400)
    result = analyze(candles)
    exact = snapshot_at_last_bar(result, candles)
    fallback = snapshot_at_last_bar(result)
    assert fallback.close == pytest.approx(exact.close)
    assert fallback.volume == pytest.approx(exact.volume)
    assert fallback.events == exact.events
    assert dict(fallback.fibonacci) == dict(exact.fibonacci)
    assert exact.fibonacci, "a 400-bar walk has swings, so Fibonacci levels"
