"""The signal quality study (app/analytics/study) and `deltaflow study`: IC and its Newey-West t against
hand-computed values, 4 h buckets, forward returns against an independent computation, the model's scoring, and
the command on a small slice of the real candles."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from app.analytics.model import Predictions
from app.analytics.study import WARMUP_BARS, complete_buckets, newey_west_t, rank_ic, score_predictions, study_inputs
from app.analytics.study.ic import newey_west_lags
from app.analytics.study.scoring import ReliabilityRow, effective_outcomes
from app.cli import main
from tests.analytics.real_data import SHARED_DATA
from tests.analytics.synthetic import HOUR_MS, ohlc_candles, random_walk

# scipy is not installed in the project's environment: the references below are computed by hand.


def test_ic_is_spearmans_rho_of_a_hand_computed_example() -> None:
    # Ranks of y: 2 1 4 3 5; d = -1 1 -1 1 0, Σd² = 4: rho = 1 - 6·4 / (5·24) = 0.8.
    ic = rank_ic(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([0.2, 0.1, 0.4, 0.3, 0.5]), horizon=1)
    assert ic.n == 5
    assert ic.ic == pytest.approx(0.8)


def test_ic_with_ties_uses_average_ranks_and_skips_undefined_bars() -> None:
    # x ranks 1.5 1.5 3 4; y ranks 1 2 3 4: the Pearson correlation of the ranks is 0.9487 (= 3 / sqrt(10)).
    score = np.array([np.nan, 1.0, 1.0, 2.0, 3.0, 9.0])
    forward = np.array([0.5, 0.1, 0.2, 0.3, 0.4, np.nan])
    ic = rank_ic(score, forward, horizon=1)
    assert ic.n == 4
    assert ic.ic == pytest.approx(3 / math.sqrt(10))


def test_newey_west_t_by_hand() -> None:
    values = np.array([1.0, 2.0, 3.0, 6.0])
    # mean 3, centred -2 -1 0 3: autocovariance 14/4 = 3.5 at lag 0, (2 + 0 + 0)/4 = 0.5 at lag 1;
    # Bartlett weight at lag 1 of 1: 1 - 1/2 = 0.5.
    assert newey_west_t(values, 0) == pytest.approx(3 / math.sqrt(3.5 / 4))
    assert newey_west_t(values, 1) == pytest.approx(3 / math.sqrt((3.5 + 2 * 0.5 * 0.5) / 4))
    assert math.isnan(newey_west_t(np.array([1.0, 1.0, 1.0]), 1))


def test_newey_west_lags_cover_the_horizon() -> None:
    assert newey_west_lags(24, 20_000) == 24
    assert newey_west_lags(1, 20_000) == 12  # ⌊4 · 200^(2/9)⌋
    assert newey_west_lags(4, 100) == 4


def test_overlapping_returns_shrink_the_t_statistic() -> None:
    rng = np.random.default_rng(2)
    steps = rng.standard_normal(3_000)
    forward = np.convolve(steps, np.ones(24), mode="valid")[:2_900]  # 24-bar sums: heavily overlapping
    score = forward + 8 * rng.standard_normal(2_900)
    ic = rank_ic(score, forward, 24)
    naive = ic.ic * math.sqrt((ic.n - 2) / (1 - ic.ic**2))
    assert 0 < ic.t_stat < naive / 2


def test_four_hour_bars_are_aligned_to_utc_and_incomplete_buckets_dropped() -> None:
    rows = [(10.0 + i, 12.0 + i, 9.0 + i, 11.0 + i) for i in range(12)]
    hourly = ohlc_candles(rows)
    times = np.delete(np.arange(12) * HOUR_MS + 2 * HOUR_MS, 5)  # starts at 02:00; the 07:00 bar is missing
    gappy = type(hourly).from_arrays(
        open_time=times, open=hourly.open[:11], high=hourly.high[:11], low=hourly.low[:11],
        close=hourly.close[:11], volume=np.arange(1.0, 12.0), interval_ms=HOUR_MS,
    )  # fmt: skip
    four = complete_buckets(gappy, 4 * HOUR_MS)
    # Buckets: 00-04 has 02, 03 (incomplete); 04-08 misses 07; 08-12 is whole (rows 5..8); 12-16 has 12, 13.
    assert four.open_time.tolist() == [8 * HOUR_MS]
    assert four.open.tolist() == [15.0]
    assert four.high.tolist() == [20.0]
    assert four.low.tolist() == [14.0]
    assert four.close.tolist() == [19.0]
    assert four.volume.tolist() == [6.0 + 7 + 8 + 9]
    assert four.interval_ms == 4 * HOUR_MS


def test_forward_returns_follow_the_evaluation_rule_and_warm_up_is_left_out() -> None:
    candles = random_walk(300, seed=4)
    inputs = study_inputs(candles, (1, 12))
    for h in (1, 12):
        expected = np.full(300, np.nan)
        expected[: 300 - h] = candles.close[h:] / candles.open[1 : 301 - h] - 1  # entry open t+1, exit close t+h
        np.testing.assert_array_equal(inputs.forward[h], expected)
    assert np.isnan(inputs.features[:WARMUP_BARS]).all()
    assert np.isnan(inputs.score[:WARMUP_BARS]).all()
    assert np.isfinite(inputs.features[WARMUP_BARS:]).all()


def test_scoring_of_a_hand_made_prediction_series() -> None:
    # Four bars, horizon 1, 10 bp per side: net = side · r - 0.002.
    predictions = Predictions(
        preferred=np.array([1, -1, 1, 0], dtype=np.int8),
        side=np.array([1, 0, 1, 0], dtype=np.int8),
        probability=np.array([0.6, 0.4, 0.7, np.nan]),
        expected_return=np.array([0.001, -0.001, 0.002, np.nan]),
        score=np.array([0.5, -0.5, 1.0, np.nan]),
    )
    forward = np.array([0.01, 0.01, -0.01, 0.02])
    figures = score_predictions(predictions, forward, horizon=1, cost_per_side=0.001, deciles=10)
    assert figures.stated == 3  # the bar without a model states nothing
    hits = np.array([1.0, 0.0, 0.0])  # +0.008 wins; the short of an up move and the long of a down move lose
    assert figures.brier == pytest.approx(float(np.mean((np.array([0.6, 0.4, 0.7]) - hits) ** 2)))
    assert figures.decided == 2
    assert figures.decided_mean == pytest.approx((0.008 - 0.012) / 2)
    assert figures.decided_hit_rate == pytest.approx(0.5)
    assert [row.n for row in figures.reliability] == [1, 1, 1]
    assert figures.trades.tolist() == pytest.approx([0.008, -0.012])


def test_study_command_writes_the_report_on_a_small_slice_of_real_data(tmp_path: Path) -> None:
    if not (SHARED_DATA / "candles" / "coinbase_btcusd_1h.csv").is_file():
        pytest.skip(f"real candle data not found in {SHARED_DATA} (only present next to the project's checkout)")
    out = tmp_path / "study.md"
    code = main(["study", "--data-dir", str(SHARED_DATA), "--max-bars", "330", "--horizon", "12", "--out", str(out)])
    assert code == 0
    report = out.read_text()
    for name in ("1h", "4h", "1d"):
        assert f"| {name} | 330 |" in report
    assert "chosen among **24 configurations, all counted**" in report
    for section in ("## 1. Information coefficient", "## 2. Learned, calibrated model", "### Reliability"):
        assert section in report
    for component in ("smc", "indicators", "cvd", "orderflow", "fibonacci", "score", "learned model"):
        assert f"| {component}" in report
    # One row per configuration run: 3 windows x 2 ridges x (shrinkage off, or on at 3 outcome spacings).
    assert report.count("| 12 | ") == 24
    assert "| 12 | 500 | 1 | x2 |" in report


def test_study_command_reports_a_missing_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["study", "--data-dir", str(tmp_path), "--out", str(tmp_path / "x.md")])
    assert code == 2
    assert "cannot read the candles" in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()


def test_reliability_counts_each_deciles_effective_outcomes() -> None:
    # Horizon 4, rho(d) = (2 / pi) asin(1 - d / 4): rho(1) = 0.5399, rho(2) = 1/3, rho(3) = 0.1609. The low half
    # (bars 0-7, contiguous) has 7, 6 and 5 pairs at gaps 1, 2, 3; the high half (bars 8, 10, ..., 22) 7 pairs at
    # gap 2 only.
    bars = 24
    probability = np.where(np.arange(bars) < 8, 0.4, np.where(np.arange(bars) % 2 == 0, 0.6, np.nan))
    predictions = Predictions(
        preferred=np.ones(bars, dtype=np.int8),
        side=np.zeros(bars, dtype=np.int8),
        probability=probability,
        expected_return=np.zeros(bars),
        score=np.zeros(bars),
    )
    forward = np.full(bars, 0.01)
    figures = score_predictions(predictions, forward, horizon=4, cost_per_side=0.001, deciles=2)
    low, high = figures.reliability
    rho = [2 / math.pi * math.asin(1 - gap / 4) for gap in (1, 2, 3)]
    assert (low.n, high.n) == (8, 8)
    assert low.effective == pytest.approx(64 / (8 + 2 * (7 * rho[0] + 6 * rho[1] + 5 * rho[2])))
    assert high.effective == pytest.approx(64 / (8 + 2 * 7 / 3))
    assert high.standard_error == pytest.approx(math.sqrt(0.6 * 0.4 / high.effective))
    assert effective_outcomes(np.arange(10), 1) == 10  # one-bar outcomes do not overlap
    assert effective_outcomes(np.array([0, 5, 10]), 4) == 3  # nor do 4-bar outcomes 5 bars apart


def test_a_calibrated_decile_lands_within_tolerance_as_often_as_its_sample_allows() -> None:
    # 80 independent outcomes at p = 0.5: se 5.59 points, so ±5 points holds only 2 Phi(0.894) - 1 = 62.9 %.
    assert ReliabilityRow(2_000, 0.5, 0.5, 80).within(0.05) == pytest.approx(0.629, abs=0.001)
    assert ReliabilityRow(20_000, 0.5, 0.5, 20_000).within(0.05) == pytest.approx(1.0)
    assert math.isnan(ReliabilityRow(10, 0.5, 0.5, 0).within(0.05))  # no outcome: nothing to measure
