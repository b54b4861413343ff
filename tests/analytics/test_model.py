"""The learned, calibrated model (app/analytics/model): PAV and the logistic fit against hand-computed values, a
planted edge found and calibrated, abstention without one, purged folds, causality by prefix replay, the DSR."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.analytics.model import ModelParams, deflated_sharpe, fit_window, walk_forward
from app.analytics.model.calibrated import purged_folds
from app.analytics.model.isotonic import binned_isotonic, equal_count_bins, pav, shrunk_means
from app.analytics.model.logistic import fit_logistic, sigmoid
from app.analytics.model.selection import expected_max_sharpe
from app.analytics.study import score_predictions, study_inputs
from tests.analytics.synthetic import random_walk


@pytest.mark.parametrize(
    ("values", "weights", "expected"),
    [
        ([1.0, 3.0, 2.0, 4.0], [1.0, 1.0, 1.0, 1.0], [1.0, 2.5, 2.5, 4.0]),
        ([3.0, 2.0, 1.0], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0]),  # one pool, merged twice
        ([1.0, 3.0, 2.0], [1.0, 1.0, 3.0], [1.0, 2.25, 2.25]),  # (3·1 + 2·3) / 4
        ([0.0, 1.0, 2.0], [1.0, 1.0, 1.0], [0.0, 1.0, 2.0]),  # already monotone: unchanged
    ],
)
def test_pool_adjacent_violators_matches_hand_computed_fits(
    values: list[float], weights: list[float], expected: list[float]
) -> None:
    assert pav(np.array(values), np.array(weights)).tolist() == pytest.approx(expected)


def test_binned_isotonic_is_a_monotone_step_function_of_the_score() -> None:
    scores = np.array([5.0, 0.0, 1.0, 2.0, 3.0, 4.0])  # unsorted rows: the bins sort them
    bins = equal_count_bins(scores, 3)
    assert bins.sizes.tolist() == [2.0, 2.0, 2.0]
    assert bins.upper.tolist() == [1.0, 3.0, 5.0]
    fitted = binned_isotonic(bins, np.array([1.0, 0.0, 0.0, 1.0, 0.0, 1.0]))
    assert fitted.value.tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert fitted(np.array([-5.0, 1.0, 1.5, 3.0, 99.0])).tolist() == pytest.approx([0.0, 0.0, 0.5, 0.5, 1.0])
    falling = binned_isotonic(bins, np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0]), increasing=False)
    assert falling.value.tolist() == pytest.approx([1.0, 0.5, 0.0])


@pytest.mark.parametrize(
    ("outcomes", "overlap", "prior", "expected"),
    [
        # Bin means 0.1 and -0.1 inside noise of variance 0.81 / 2 each: no evidence of a difference, both pooled.
        ([1.0, -0.8, -1.0, 0.8], 1, None, [0.0, 0.0]),
        # ±1.1 with noise 0.01 / 2: tau2 = 1.21 - 0.005, each keeps 1.205 / 1.21 of its deviation.
        ([1.0, 1.2, -1.0, -1.2], 1, None, [1.1 * 1.205 / 1.21, -1.1 * 1.205 / 1.21]),
        # Outcomes overlapping 2 bars: a bin of 2 rows is worth 1, noise 0.01, each keeps 1.2 / 1.21.
        ([1.0, 1.2, -1.0, -1.2], 2, None, [1.1 * 1.2 / 1.21, -1.1 * 1.2 / 1.21]),
        # One bin, mean 0.2, within variance 0.005 over 4 rows: t² = 0.04 / 0.00125, kept share 1 - 1 / 32.
        ([0.3, 0.1, 0.2, 0.2], 1, 0.0, [0.2 * (1 - 1 / 32)]),
        # The same mean from 2 independent rows (overlap 2): t² = 16, kept share 15 / 16.
        ([0.3, 0.1, 0.2, 0.2], 2, 0.0, [0.2 * 15 / 16]),
    ],
)
def test_bin_means_are_shrunk_as_far_as_the_evidence_is_weak(
    outcomes: list[float], overlap: int, prior: float | None, expected: list[float]
) -> None:
    values = np.array(outcomes)
    bins = len(expected)
    sizes = np.full(bins, len(outcomes) / bins)
    means = values.reshape(bins, -1).mean(axis=1)
    assert shrunk_means(means, sizes, values, overlap, prior).tolist() == pytest.approx(expected)


def test_logistic_fit_is_the_penalised_optimum() -> None:
    rng = np.random.default_rng(3)
    features = rng.standard_normal((2_000, 3))
    labels = (rng.random(2_000) < sigmoid(0.8 * features[:, 0] - 0.4 * features[:, 2])).astype(np.float64)
    model = fit_logistic(features, labels, l2=0.01)
    # At the optimum the gradient of mean log-loss + l2/2 ||coef||² is zero (the intercept is not penalised).
    p = sigmoid(model.decision(features))
    standard = (features - model.mean) / model.scale
    assert float(np.mean(p - labels)) == pytest.approx(0.0, abs=1e-9)
    gradient = standard.T @ (p - labels) / 2_000 + 0.01 * model.coef
    assert np.abs(gradient).max() < 1e-9
    assert model.coef[0] * model.scale[0] ** -1 == pytest.approx(0.8, abs=0.12)
    assert model.coef[2] / model.scale[2] == pytest.approx(-0.4, abs=0.12)
    assert model.iterations <= 8


def _planted(edge: float, seed: int, n: int = 4_000) -> tuple[np.ndarray, np.ndarray]:
    """Five iid components; the one-bar forward return is ``edge · component 0`` plus 0.5 % noise."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n, 5))
    forward = edge * features[:, 0] + 0.005 * rng.standard_normal(n)
    return features, forward


def test_a_planted_edge_is_found_and_its_probabilities_are_calibrated() -> None:
    features, forward = _planted(edge=0.003, seed=11)
    # iid data: nothing persists past the one-bar horizon, so one outcome per horizon is the true count (the
    # default spacing of 2 is a prior for real markets; the next test shows what it costs here).
    params = ModelParams(horizon=1, window=1_000, outcome_spacing=1.0)
    predictions = walk_forward(features, forward, params, start=1_000, stride=25)
    figures = score_predictions(predictions, forward, 1, params.cost_per_side)
    assert figures.stated == 3_000
    assert 0.3 < figures.decided / figures.stated < 0.8  # it trades where the edge beats the fees, not everywhere
    assert figures.decided_mean > 0.001  # > 10 bp a trade after 20 bp of costs
    assert figures.decided_t > 5
    assert figures.ic.ic > 0.3
    gaps = [abs(row.realised - row.stated) for row in figures.reliability]
    assert max(gaps) < 0.07, figures.reliability  # every decile of ~300 within a few points (se ≈ 2.8)
    assert float(np.mean(gaps)) < 0.03
    assert figures.brier < figures.brier_reference
    model = fit_window(features, forward, 3_999, params)
    assert model is not None
    assert int(np.argmax(np.abs(model.logistic.coef))) == 0


def test_the_default_spacing_finds_the_same_edge_and_states_it_modestly() -> None:
    features, forward = _planted(edge=0.003, seed=11)
    params = ModelParams(horizon=1, window=1_000)
    predictions = walk_forward(features, forward, params, start=1_000, stride=25)
    figures = score_predictions(predictions, forward, 1, params.cost_per_side)
    assert figures.decided_t > 5
    top = figures.reliability[-2:]  # where the decisions are taken: shrunk toward the no-edge value, not beyond it
    assert all(row.stated < row.realised for row in top), top


def test_without_an_edge_it_abstains() -> None:
    features, forward = _planted(edge=0.0, seed=12)
    params = ModelParams(horizon=1, window=1_000)
    predictions = walk_forward(features, forward, params, start=1_000, stride=25)
    figures = score_predictions(predictions, forward, 1, params.cost_per_side)
    assert figures.stated == 3_000
    assert figures.decided / figures.stated < 0.02
    assert float(np.nanmax(predictions.expected_return)) < 0.002
    assert float(np.nanmean(predictions.probability)) < 0.5  # after 20 bp of costs a coin flip loses more often


def test_a_wider_outcome_spacing_trusts_a_windows_drift_and_spread_less() -> None:
    # A weak edge plus a drift of 4 bp a bar: counting fewer independent outcomes pulls the window's pooled value
    # toward its no-edge value (0 for the mean return; PAV keeps the weighted mean of equal-count bins) and the bins
    # toward the pooled value.
    features, forward = _planted(edge=0.0015, seed=13, n=1_200)
    forward = forward + 0.0004
    fits = [
        fit_window(features, forward, 1_199, ModelParams(horizon=4, window=1_000, outcome_spacing=s)) for s in (1, 4)
    ]
    assert fits[0] is not None
    assert fits[1] is not None
    narrow, wide = fits[0].mean_return.value, fits[1].mean_return.value
    assert abs(float(wide.mean())) < abs(float(narrow.mean()))
    assert float(np.ptp(wide)) < float(np.ptp(narrow))
    assert float(np.ptp(fits[1].p_long.value)) < float(np.ptp(fits[0].p_long.value))


def test_no_model_below_the_minimum_rows() -> None:
    features, forward = _planted(edge=0.003, seed=13, n=300)
    params = ModelParams(horizon=4, window=1_000, min_rows=200)
    assert fit_window(features, forward, 202, params) is None  # rows 0..198 known: 199 < 200
    assert fit_window(features, forward, 203, params) is not None
    predictions = walk_forward(features, forward, params)
    assert (predictions.side[:203] == 0).all()
    assert np.isnan(predictions.probability[:203]).all()
    assert np.isfinite(predictions.probability[203:]).all()


@pytest.mark.parametrize(("horizon", "embargo"), [(1, 0), (4, 4), (12, 3)])
def test_purged_folds_never_train_on_an_outcome_overlapping_the_test_fold(horizon: int, embargo: int) -> None:
    bars = np.arange(100, 400)
    for train, test in purged_folds(bars, 5, horizon, embargo):
        test_span = (int(bars[test[0]]) + 1, int(bars[test[-1]]) + horizon)
        for t in bars[train].tolist():
            assert t + horizon < test_span[0] or t + 1 > test_span[1]  # spans [t + 1, t + h] never overlap
            assert not test_span[1] < t + 1 <= test_span[1] + embargo  # nor start within the embargo
        if horizon > 1 or embargo:  # one-bar outcomes never overlap: with no embargo nothing is dropped
            assert train.size + test.size < bars.size


def test_fit_reads_no_outcome_unknown_at_the_window_close() -> None:
    features, forward = _planted(edge=0.003, seed=14, n=800)
    params = ModelParams(horizon=12, window=500)
    before = fit_window(features, forward, 700, params)
    tampered = forward.copy()
    tampered[689:] = 1.0  # bars 689.. end after bar 700's close: unknown then
    after = fit_window(features, tampered, 700, params)
    assert before is not None
    assert after is not None
    assert after.predict(features[700:701]).score.tolist() == before.predict(features[700:701]).score.tolist()
    assert after.mean_return.value.tolist() == before.mean_return.value.tolist()


def test_model_output_at_a_bar_is_unchanged_when_later_bars_are_appended() -> None:
    candles = random_walk(480, seed=21)
    params = ModelParams(horizon=4, window=300, min_rows=150)
    full = study_inputs(candles, (4,))
    full_predictions = walk_forward(full.features, full.forward[4], params)
    assert np.isfinite(full_predictions.probability).sum() > 200
    for cut in (400, 479):
        prefix = study_inputs(candles.head(cut + 1), (4,))
        model = fit_window(prefix.features, prefix.forward[4], cut, params)
        assert model is not None
        alone = model.predict(prefix.features[cut : cut + 1])
        assert alone.probability[0] == full_predictions.probability[cut]
        assert alone.expected_return[0] == full_predictions.expected_return[cut]
        assert alone.side[0] == full_predictions.side[cut]


def test_expected_maximum_sharpe_of_unskilled_trials() -> None:
    # (1 - g) · Φ⁻¹(0.9) + g · Φ⁻¹(1 - 1/(10e)) = 0.42278 · 1.28155 + 0.57722 · 1.78936
    assert expected_max_sharpe(1.0, 10) == pytest.approx(1.5747, abs=2e-4)
    assert expected_max_sharpe(0.25, 10) == pytest.approx(1.5747 / 2, abs=1e-4)
    assert expected_max_sharpe(1.0, 1) == 0.0


def test_deflated_sharpe_falls_with_the_number_of_trials() -> None:
    rng = np.random.default_rng(5)
    returns = 0.002 + 0.01 * rng.standard_normal(400)
    trials = np.array([0.0, 0.05, -0.05, 0.1, 0.2])
    one = deflated_sharpe(returns, trials, 1)
    # One trial: the Probabilistic Sharpe Ratio against 0, by the formula.
    sr = returns.mean() / returns.std(ddof=1)
    z = (returns - returns.mean()) / returns.std()
    spread = 1 - float(np.mean(z**3)) * sr + (float(np.mean(z**4)) - 1) / 4 * sr**2
    assert one.probability == pytest.approx(0.5 * math.erfc(-sr * math.sqrt(399 / spread) / math.sqrt(2)))
    many = deflated_sharpe(returns, trials, 36)
    assert many.expected_max > 0
    assert many.probability < one.probability


def test_equal_count_bins_split_like_array_split() -> None:
    bins = equal_count_bins(np.arange(23.0)[::-1], 10)
    assert bins.sizes.tolist() == [3.0, 3.0, 3.0] + [2.0] * 7
    assert bins.starts.tolist() == [0, 3, 6, 9, 11, 13, 15, 17, 19, 21]
    assert bins.upper.tolist() == [2.0, 5.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 22.0]
