"""Signal track record: outcomes and headline figures on small series whose numbers are computed by hand."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from app.analytics.evaluation import EvaluationParams, SignalSeries, compute_outcomes, evaluate
from app.analytics.evaluation.outcomes import STOP, TARGET, TIMEOUT
from tests.analytics.evaluation_cases import HOUR_MS, NAN, open_at_100, series

FLAT = (100.0, 100.0, 100.0, 100.0)
NO_COSTS = EvaluationParams(fee_bps=0, slippage_bps=0, min_signals=1, horizons=(1,))


def r_outcome(
    bars: list[tuple[float, float, float, float]], bias: int, stop: float, target: float, h: int
) -> tuple[float, int]:
    """The R outcome (rounded to 9 decimals, to compare with the hand figures) and exit reason of bar 0's signal."""
    n = len(bars)
    s = series(bars, [bias] + [0] * (n - 1), stop=[stop] + [NAN] * (n - 1), target=[target] + [NAN] * (n - 1))
    outcome = compute_outcomes(s, (h,), 0.0)[h]
    return round(float(outcome.r_multiple[0]), 9), int(outcome.exit_reason[0])


# --- outcomes -------------------------------------------------------------------------------------------------


def test_forward_return_enters_at_the_next_open_and_exits_at_the_horizon_close() -> None:
    bars = [(100, 101, 99, 100), (102, 104, 101, 103), (103, 106, 102, 105), (105, 105, 100, 101)]
    outcomes = compute_outcomes(series(bars, [1, -1, 0, 1]), (1, 2), 0.0)
    # h = 1: close[t + 1] / open[t + 1] - 1 → 103/102 - 1, 105/103 - 1, 101/105 - 1, undecided (no bar 4).
    np.testing.assert_allclose(outcomes[1].forward_return[:3], [103 / 102 - 1, 105 / 103 - 1, 101 / 105 - 1])
    assert math.isnan(outcomes[1].forward_return[3])
    # h = 2: close[t + 2] / open[t + 1] - 1 → 105/102 - 1, 101/103 - 1; bars 2 and 3 are undecided.
    np.testing.assert_allclose(outcomes[2].forward_return[:2], [105 / 102 - 1, 101 / 103 - 1])
    assert np.isnan(outcomes[2].forward_return[2:]).all()
    # The trade return is signed by the bias: the short on bar 1 earns -(105/103 - 1); neutral bar 2 has none.
    np.testing.assert_allclose(outcomes[1].trade_return[:2], [103 / 102 - 1, -(105 / 103 - 1)])
    assert np.isnan(outcomes[1].trade_return[2:]).all()


def test_fees_and_slippage_are_paid_on_entry_and_on_exit() -> None:
    bars = [FLAT, (100, 102, 100, 102)]
    s = series(bars, [1, 0], stop=[98, NAN])
    # 5 bps fee + 5 bps slippage per side = 0.001 a side; the trade pays it twice: 0.02 - 0.002 = 0.018.
    outcome = compute_outcomes(s, (1,), EvaluationParams().cost_per_side)[1]
    assert outcome.trade_return[0] == pytest.approx(0.018)
    # In R (R = 100 - 98 = 2): (102 - 100) / 2 - 2 · 0.001 · 100 / 2 = 1 - 0.1 = 0.9.
    assert outcome.r_multiple[0] == pytest.approx(0.9)
    assert outcome.forward_return[0] == pytest.approx(0.02)  # the forward return stays gross


def test_target_reached_counts_its_r_multiple_and_a_shorter_horizon_times_out() -> None:
    bars = [FLAT, (100, 103, 99, 102), (102, 107, 101, 106), (106, 106, 106, 106)]
    # Entry 100, stop 98 (R = 2), target 106. Bar 1 touches neither: at h = 1 the trade times out at 102 → 1 R.
    assert r_outcome(bars, 1, 98, 106, 1) == (1.0, TIMEOUT)
    # Bar 2's high 107 reaches the target: (106 - 100) / 2 = 3 R.
    assert r_outcome(bars, 1, 98, 106, 2) == (3.0, TARGET)


def test_a_bar_touching_both_stop_and_target_counts_the_stop() -> None:
    # Long: entry 100, stop 98, target 104; bar 1 spans 97 … 105 → stop, (98 - 100) / 2 = -1 R.
    assert r_outcome([FLAT, (100, 105, 97, 101)], 1, 98, 104, 1) == (-1.0, STOP)
    # Short mirrored: stop 102, target 96; bar 1 spans 95 … 103 → stop, -(102 - 100) / 2 = -1 R.
    assert r_outcome([FLAT, (100, 103, 95, 99)], -1, 102, 96, 1) == (-1.0, STOP)


def test_a_short_reaching_its_target_earns_positive_r() -> None:
    # Short: entry 100, stop 102 (R = 2), target 96; bar 1's low 95 reaches it, high 101 stays below the stop.
    assert r_outcome([FLAT, (100, 101, 95, 96)], -1, 102, 96, 1) == (2.0, TARGET)


def test_a_gap_through_the_stop_fills_at_the_open() -> None:
    bars = [FLAT, (100, 101, 99, 99.5), (95, 96, 94, 95)]
    # Long, entry 100, stop 98 (R = 2): bar 2 opens at 95, below the stop → filled at 95: (95 - 100) / 2 = -2.5 R.
    assert r_outcome(bars, 1, 98, 110, 2) == (-2.5, STOP)
    # Before the gap (h = 1) it times out at 99.5: -0.25 R.
    assert r_outcome(bars, 1, 98, 110, 1) == (-0.25, TIMEOUT)
    # Short, stop 102: bar 2 opens at 105 → filled at 105: -(105 - 100) / 2 = -2.5 R.
    assert r_outcome([FLAT, (100, 101, 99, 100.5), (105, 106, 104, 105)], -1, 102, 90, 2) == (-2.5, STOP)


def test_a_gap_through_the_target_fills_at_the_open() -> None:
    # Long, entry 100, stop 98, target 104; bar 2 opens at 105 → filled at 105: (105 - 100) / 2 = 2.5 R.
    bars = [FLAT, (100, 101, 99, 101), (105, 106, 104, 105)]
    assert r_outcome(bars, 1, 98, 104, 2) == (2.5, TARGET)


def test_an_entry_opening_through_its_stop_scores_minus_one_r() -> None:
    # Published at close 100 with stop 99; the next bar opens at 98.5, already through it: dead on arrival, -1 R.
    assert r_outcome([FLAT, (98.5, 99, 98, 99)], 1, 99, 104, 1) == (-1.0, STOP)


def test_a_signal_without_stop_has_no_r_outcome_and_without_target_runs_to_stop_or_time_out() -> None:
    outcome = compute_outcomes(series([FLAT, (100, 110, 99, 108)], [1, 0]), (1,), 0.0)[1]
    assert math.isnan(outcome.r_multiple[0])
    assert outcome.trade_return[0] == pytest.approx(0.08)
    # Target NaN, stop 95 (R = 5): the high of 110 exits nothing; time-out at 108 → 1.6 R.
    assert r_outcome([FLAT, (100, 110, 99, 108)], 1, 95, NAN, 1) == (1.6, TIMEOUT)


def test_horizons_longer_than_the_series_are_undecided_and_reported_as_pending() -> None:
    s = series([FLAT] * 10, [1, -1, 0] * 3 + [1], stop=[99, 101, NAN] * 3 + [99])
    report = evaluate(s, EvaluationParams(horizons=(4, 24), min_signals=1)).to_dict()["horizons"]
    assert report["24"]["decided"] == 0
    assert report["24"]["pending"] == 7  # every long and short: none is dropped silently
    assert report["24"]["all"]["n"] == 0
    assert report["24"]["all"]["insufficient"] is True
    assert report["24"]["all"]["mean_return"] is None
    assert report["24"]["baselines"]["always_long"]["n"] == 0
    # h = 4: bars 0 … 5 are decided (5 of them long or short), bars 6 … 9 pending (2 of them long or short).
    assert (report["4"]["decided"], report["4"]["pending"], report["4"]["neutral"]) == (4, 3, 3)


def test_missing_bars_are_counted_and_horizons_count_rows() -> None:
    times = [0, 1, 2, 5, 6, 7]  # 2 bars missing between 2 and 5
    s = series([FLAT] * 6, [1] * 6, open_time=[t * HOUR_MS for t in times])
    result = evaluate(s, EvaluationParams(horizons=(1, 2), min_signals=1))
    assert (result.gaps, result.missing_bars) == (1, 2)
    report = result.to_dict()["horizons"]
    # h = 1: only the window of bar 2 (2 → row 3) crosses the gap; h = 2: bars 1 and 2 do.
    assert report["1"]["spanning_gaps"] == 1
    assert report["2"]["spanning_gaps"] == 2
    assert report["2"]["decided"] == 4  # rows, not clock time: bar 3 + 2 rows = bar 5 exists


# --- headline figures ---------------------------------------------------------------------------------------

# Moves 0, +2 %, -1 %, +3 %, -2 %, +1 % on bars opening at 100: the h = 1 forward returns of bars 0 … 4 are
# +0.02, -0.01, +0.03, -0.02, +0.01. Biases long, long, long, short, short (bar 5 undecided) give trade returns
#   long  +0.02, -0.01, +0.03        short  -(-0.02) = +0.02, -(+0.01) = -0.01
MOVES = [0, 0.02, -0.01, 0.03, -0.02, 0.01]
BIAS = [1, 1, 1, -1, -1, 0]
# Stops 2 % away (R = 2 on an entry of 100, never touched by these ranges), no target: R = 50 · trade return.
STOPS = [98, 98, 98, 102, 102, NAN]
SCORES = [0.5, -0.2, 0.9, 0.1, 0.3, 0.0]
CONFIDENCE = [0.1, 0.3, 0.5, 0.7, 0.9, 0.5]


def golden(params: EvaluationParams = NO_COSTS) -> dict[str, Any]:
    s = series(open_at_100(MOVES), BIAS, stop=STOPS, score=SCORES, confidence=CONFIDENCE)
    result: dict[str, Any] = evaluate(s, params).to_dict()["horizons"]["1"]
    return result


def test_group_figures_match_the_hand_computation() -> None:
    report = golden()
    everything, longs, shorts = report["all"], report["long"], report["short"]
    # all: [+.02, -.01, +.03, +.02, -.01]: 3 hits of 5, mean .05 / 5 = .01, median .02, PF .07 / .02 = 3.5.
    assert everything["n"] == 5
    assert everything["hit_rate"] == pytest.approx(0.6)
    assert everything["mean_return"] == pytest.approx(0.01)
    assert everything["median_return"] == pytest.approx(0.02)
    assert everything["profit_factor"] == pytest.approx(3.5)
    assert everything["bootstrap_block"] == 2  # max(h = 1, ceil(5 ** (1/3)) = 2)
    # long: [+.02, -.01, +.03]: 2/3, mean .04/3, median .02, PF .05/.01 = 5. short: [+.02, -.01]: .5, .005, .005, 2.
    assert (longs["n"], longs["hit_rate"], longs["median_return"]) == (3, pytest.approx(2 / 3), pytest.approx(0.02))
    assert (longs["mean_return"], longs["profit_factor"]) == (pytest.approx(0.04 / 3), pytest.approx(5.0))
    assert (shorts["n"], shorts["hit_rate"], shorts["mean_return"]) == (2, 0.5, pytest.approx(0.005))
    assert (shorts["median_return"], shorts["profit_factor"]) == (pytest.approx(0.005), pytest.approx(2.0))


def test_expectancy_in_r_matches_the_hand_computation() -> None:
    report = golden()
    # R outcomes 50 · return: all [1, -.5, 1.5, 1, -.5] → 2.5 / 5 = .5; long [1, -.5, 1.5] → 2/3; short → .25.
    assert report["all"]["expectancy_r"] == pytest.approx(0.5)
    assert report["long"]["expectancy_r"] == pytest.approx(2 / 3)
    assert report["short"]["expectancy_r"] == pytest.approx(0.25)
    assert report["all"]["n_r"] == 5


def test_sharpe_and_drawdown_of_the_followed_trades() -> None:
    report = golden()["all"]
    # h = 1 trades never overlap: all 5 are followed. Mean .01; deviations .01, -.02, .02, .01, -.02 → sum of
    # squares 14e-4, sample variance 3.5e-4 → Sharpe .01 / sqrt(3.5e-4) = 1 / sqrt(3.5) = 0.5345.
    assert report["n_trades"] == 5
    assert report["sharpe"] == pytest.approx(1 / math.sqrt(3.5))
    # Equity 1, 1.02, 1.0098, 1.040094, 1.06089588, 1.050287: the worst fall from a peak is 1 %, twice.
    assert report["max_drawdown"] == pytest.approx(0.01)


def test_sharpe_skips_overlapping_trades() -> None:
    # h = 2, every bar long: the trade of bar 0 exits at the close of bar 2, so bar 1's signal is skipped and the
    # next trade is bar 2's (entry at the open of bar 3). Bars 0 … 7 are decided; followed: 0, 2, 4, 6.
    moves = [0, 0.01, 0.01, -0.01, 0.02, 0.0, 0.01, 0.01, 0.0, 0.0]
    s = series(open_at_100(moves), [1] * 10)
    report = evaluate(s, EvaluationParams(horizons=(2,), min_signals=1, fee_bps=0, slippage_bps=0)).to_dict()
    figures = report["horizons"]["2"]["all"]
    assert (figures["n"], figures["n_trades"]) == (8, 4)
    # Trades enter at 100 (bar t+1's open) and exit at bar t+2's close: returns of bars 0, 2, 4, 6 are
    # move[t + 2] = .01, .02, .01, 0 → mean .01, sample std sqrt((0 + 1 + 0 + 1) e-4 / 3) → Sharpe sqrt(1.5).
    assert figures["sharpe"] == pytest.approx(0.01 / math.sqrt(2e-4 / 3))


def test_information_coefficient_matches_the_hand_computed_spearman() -> None:
    ic = golden()["ic"]
    # Forward returns of bars 0 … 4: +.02, -.01, +.03, -.02, +.01 → ranks 4, 2, 5, 1, 3.
    # Scores .5, -.2, .9, .1, .3 → ranks 4, 1, 5, 2, 3. d = 0, 1, 0, -1, 0; rho = 1 - 6 · 2 / (5 · 24) = 0.9.
    assert ic["n"] == 5
    assert ic["spearman"] == pytest.approx(0.9)
    # t = .9 · sqrt(3 / (1 - .81)) = 3.5762; h = 1, so the overlap adjustment changes nothing.
    assert ic["t_stat"] == pytest.approx(0.9 * math.sqrt(3 / 0.19))
    assert ic["t_stat_adjusted"] == pytest.approx(ic["t_stat"])


def test_calibration_table_matches_the_hand_computation() -> None:
    params = EvaluationParams(horizons=(1,), fee_bps=0, slippage_bps=0, min_signals=1, calibration_buckets=2)
    table = golden(params)["calibration"]
    # Confidence .1, .3 (bucket [0, .5)) → returns +.02, -.01: hit .5, mean confidence .2.
    # Confidence .5, .7, .9 (bucket [.5, 1]) → +.03, +.02, -.01: hit 2/3, mean confidence .7.
    assert [row["n"] for row in table] == [2, 3]
    assert [(row["lower"], row["upper"]) for row in table] == [(0.0, 0.5), (0.5, 1.0)]
    assert table[0]["hit_rate"] == pytest.approx(0.5)
    assert table[1]["hit_rate"] == pytest.approx(2 / 3)
    assert table[0]["mean_confidence"] == pytest.approx(0.2)
    assert table[1]["mean_confidence"] == pytest.approx(0.7)


def test_always_long_baseline_with_and_without_fees() -> None:
    gross = golden()["baselines"]["always_long"]
    # Every decided bar, long: +.02, -.01, +.03, -.02, +.01 → n 5, hit 3/5, mean .006, median .01.
    assert (gross["n"], gross["hit_rate"]) == (5, pytest.approx(0.6))
    assert (gross["mean_return"], gross["median_return"]) == (pytest.approx(0.006), pytest.approx(0.01))
    net = golden(EvaluationParams(horizons=(1,), min_signals=1))["baselines"]["always_long"]
    # 10 bps a side → -.002 a trade: .018, -.012, .028, -.022, .008 → mean .004, still 3 hits; gross kept alongside.
    assert net["mean_return"] == pytest.approx(0.004)
    assert net["mean_return_gross"] == pytest.approx(0.006)
    assert net["hit_rate"] == net["hit_rate_gross"] == pytest.approx(0.6)


def test_fees_lower_every_group_return_by_two_sides() -> None:
    net = golden(EvaluationParams(horizons=(1,), min_signals=1))["all"]
    # .01 - 2 · .001; the R expectancy loses 2 · .001 · 100 / 2 = .1 R.
    assert net["mean_return"] == pytest.approx(0.008)
    assert net["mean_return_gross"] == pytest.approx(0.01)
    assert net["expectancy_r"] == pytest.approx(0.4)
    # -.01 trades become -.012 and +.02 ones .018: PF (.018 + .028 + .018) / (.012 + .012) = .064 / .024.
    assert net["profit_factor"] == pytest.approx(0.064 / 0.024)


def test_fewer_than_30_decided_signals_report_no_figures() -> None:
    moves = [0.01 * ((i % 3) - 1) for i in range(40)]
    bias = [1 if i < 29 else 0 for i in range(40)]
    report = evaluate(series(open_at_100(moves), bias), EvaluationParams(horizons=(1,))).to_dict()["horizons"]["1"]
    figures = report["all"]
    assert (figures["n"], figures["insufficient"]) == (29, True)
    assert all(figures[name] is None for name in ("hit_rate", "mean_return", "expectancy_r", "sharpe"))
    assert figures["mean_return_ci"] == [None, None]
    assert report["baselines"]["random"]["p_value"] is None
    # One more signal crosses the floor.
    bias[29] = 1
    report = evaluate(series(open_at_100(moves), bias), EvaluationParams(horizons=(1,))).to_dict()["horizons"]["1"]
    assert (report["all"]["n"], report["all"]["insufficient"]) == (30, False)
    assert report["all"]["mean_return"] is not None


def test_flat_prices_lose_exactly_the_costs() -> None:
    n = 40
    s = series([FLAT] * n, [1, -1] * (n // 2), stop=[99, 101] * (n // 2))
    report = evaluate(s, EvaluationParams(horizons=(1,))).to_dict()["horizons"]["1"]
    figures = report["all"]
    assert figures["n"] == 39
    assert figures["mean_return"] == pytest.approx(-0.002)
    assert figures["hit_rate"] == 0.0
    assert figures["profit_factor"] == 0.0  # no gain over .078 of losses
    assert figures["sharpe"] is None  # zero dispersion: undefined, not infinite
    # Time-out at the entry price: 0 R minus 2 · .001 · 100 / 1 = -.2 R.
    assert figures["expectancy_r"] == pytest.approx(-0.2)
    assert report["ic"]["spearman"] is None  # constant returns have no rank correlation
    assert report["baselines"]["random"]["p_value"] == 1.0  # every shuffle ties


def test_no_decided_signals() -> None:
    moves = [0.01 * ((i * 7 % 5) - 2) for i in range(40)]
    report = evaluate(series(open_at_100(moves), [0] * 40), EvaluationParams(horizons=(1,))).to_dict()
    horizon = report["horizons"]["1"]
    assert [horizon[g]["n"] for g in ("all", "long", "short")] == [0, 0, 0]
    assert horizon["all"]["insufficient"] is True
    assert horizon["neutral"] == 40
    assert all(row["n"] == 0 for row in horizon["calibration"])
    assert horizon["baselines"]["always_long"]["n"] == 39  # the baseline still trades every bar
    assert horizon["ic"]["n"] == 39


def test_to_dict_is_strict_json_and_has_the_documented_shape() -> None:
    report = evaluate(series([FLAT] * 40, [1] * 40), EvaluationParams()).to_dict()
    text = json.dumps(report, allow_nan=False)  # raises on NaN or infinity
    assert set(json.loads(text)["horizons"]) == {"1", "4", "12", "24"}
    horizon = report["horizons"]["4"]
    assert {"all", "long", "short", "baselines", "calibration", "ic"} <= set(horizon)
    assert set(horizon["baselines"]) == {"always_long", "random"}
    for group in ("all", "long", "short"):
        assert {"n", "mean_return"} <= set(horizon[group])


def test_summary_has_the_embedded_figures_per_horizon() -> None:
    # One block as long as the whole series: every circular resample is a rotation of the 5 R outcomes, so the
    # interval collapses onto the mean (.5 R); and with a single block there is nothing to permute.
    params = EvaluationParams(horizons=(1,), fee_bps=0, slippage_bps=0, min_signals=1, block_length=5)
    summary = evaluate(series(open_at_100(MOVES), BIAS, stop=STOPS), params).summary()
    assert summary == [
        {
            "horizon": 1,
            "n": 5,
            "insufficient": False,
            "hit_rate": pytest.approx(0.6),
            "expectancy_r": pytest.approx(0.5),
            "expectancy_r_ci": [pytest.approx(0.5), pytest.approx(0.5)],
            "p_value": None,
        }
    ]
    json.dumps(summary, allow_nan=False)


# --- inputs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bars", [0, 1])
def test_series_too_short_for_any_trade_evaluate_to_empty_figures(bars: int) -> None:
    report = evaluate(series([FLAT] * bars, [1] * bars)).to_dict()
    assert report["bars"] == bars
    assert all(report["horizons"][h]["all"]["n"] == 0 for h in ("1", "4", "12", "24"))
    json.dumps(report, allow_nan=False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bias": [1, 2]}, "bias[1] is not -1, 0 or 1"),
        ({"score": [0.0, 1.5]}, "score[1] is not in [-1, 1]"),
        ({"confidence": [NAN, 0.5]}, "confidence[0] is not in [0, 1]"),
        ({"stop": [-1.0, NAN]}, "stop[0] is not NaN or a price"),
        ({"bias": [1, 0, 0]}, "bias has 3 values, expected 2"),
        ({"open_time": [5, 5]}, "open_time[0] does not increase"),
    ],
)
def test_invalid_series_are_refused_with_the_first_bad_value(change: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {
        "open_time": [0, 1],
        "open": [100, 100],
        "high": [100, 100],
        "low": [100, 100],
        "close": [100, 100],
        "bias": [1, 0],
        "score": [0.5, 0.0],
        "confidence": [0.5, 0.5],
        "stop": [99, NAN],
        "target": [NAN, NAN],
    }
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        SignalSeries.from_arrays(**(arguments | change))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"horizons": (4, 1)}, "horizons must be strictly increasing"),
        ({"horizons": ()}, "horizons must not be empty"),
        ({"horizons": (1, 1_001)}, "horizons must be numbers in"),
        ({"permutations": 999}, "permutations must be an integer in"),
        ({"fee_bps": -1.0}, "fee_bps must be in"),
        ({"min_signals": 0}, "min_signals must be an integer in"),
    ],
)
def test_out_of_range_parameters_are_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EvaluationParams(**params)
