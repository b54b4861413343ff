"""Signal track record: the statistics against independent plain-Python computations, and the evaluation on the
real hourly candles against a plain loop."""

from __future__ import annotations

import importlib.util
import itertools
import math
import statistics
from typing import Any

import numpy as np
import pytest

from app.analytics.evaluation import EvaluationParams, SignalSeries, compute_outcomes, evaluate
from app.analytics.evaluation.bootstrap import block_bootstrap_mean, block_starts, rng_for
from app.analytics.evaluation.outcomes import STOP, TARGET, TIMEOUT
from app.analytics.evaluation.permutation import block_orders, permuted_sums
from app.analytics.evaluation.stats import average_ranks, spearman
from tests.analytics.evaluation_cases import open_at_100, series
from tests.analytics.real_data import hourly_candles


def plain_ranks(values: list[float]) -> list[float]:
    """Average ranks: walk the sorted values, giving each run of equal values the mean of the ranks it spans."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def plain_spearman(x: list[float], y: list[float]) -> float:
    rx, ry = plain_ranks(x), plain_ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


def test_average_ranks_share_ties() -> None:
    # 3 appears twice, taking ranks 3 and 4 → 3.5 each.
    np.testing.assert_array_equal(average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])


def test_spearman_with_ties_matches_plain_python_and_scipy() -> None:
    rng = np.random.default_rng(3)
    x = np.round(rng.standard_normal(300), 1)  # many ties
    y = np.round(x + rng.standard_normal(300), 1)
    ours = spearman(x, y)
    assert ours == pytest.approx(plain_spearman(x.tolist(), y.tolist()), rel=1e-12)
    if importlib.util.find_spec("scipy") is not None:
        from scipy import stats as scipy_stats  # type: ignore[import-untyped,import-not-found,unused-ignore]

        assert ours == pytest.approx(float(scipy_stats.spearmanr(x, y).statistic), rel=1e-12)


def test_block_bootstrap_matches_resamples_built_one_by_one() -> None:
    values = np.random.default_rng(5).standard_normal(23)
    block, resamples = 4, 300
    starts = block_starts(23, block, resamples, rng_for(9, "check"))
    low, high = block_bootstrap_mean(values, block, starts)
    # The same draws (6 block starts per resample), each resample assembled value by value, wrapping circularly
    # and cutting the last block to fit 23 values.
    draws = rng_for(9, "check").integers(0, 23, size=(resamples, 6), dtype=np.int64)
    means = []
    for row in draws.tolist():
        sample = [float(values[(start + offset) % 23]) for start in row for offset in range(block)][:23]
        means.append(sum(sample) / 23)
    expected = np.quantile(means, [0.025, 0.975])
    assert low == pytest.approx(expected[0])
    assert high == pytest.approx(expected[1])


def test_block_bootstrap_is_seeded() -> None:
    values = np.random.default_rng(6).standard_normal(200)
    first = block_bootstrap_mean(values, 6, block_starts(200, 6, 500, rng_for(1, "x")))
    assert first == block_bootstrap_mean(values, 6, block_starts(200, 6, 500, rng_for(1, "x")))
    assert first != block_bootstrap_mean(values, 6, block_starts(200, 6, 500, rng_for(2, "x")))


@pytest.mark.parametrize(
    "permutations",
    [1_000, 4],  # more permutations than blocks: cross-products; fewer: each permutation gathered directly
)
def test_block_permutation_matches_an_explicit_shuffle_loop(permutations: int) -> None:
    rng = np.random.default_rng(11)
    bias = rng.choice([-1.0, 0.0, 1.0], 53)
    forward = rng.standard_normal(53) / 100
    orders = block_orders(10, permutations, rng_for(4, "perm"))  # 53 bars in blocks of 5: 10 whole, 3 kept
    actual, sums = permuted_sums(bias, forward, 5, lambda blocks: orders)
    assert actual == pytest.approx(float(bias @ forward))
    assert sums.shape == (permutations,)
    for row, total in zip(orders.tolist(), sums.tolist(), strict=True):
        shuffled = [float(b) for j in row for b in bias[j * 5 : j * 5 + 5]] + bias[50:].tolist()
        assert sorted(shuffled) == sorted(bias.tolist())  # the same exposure
        assert total == pytest.approx(sum(b * f for b, f in zip(shuffled, forward.tolist(), strict=True)))


def foresight(sign: int, seed: int) -> dict[str, Any]:
    moves = [0.0, *(np.random.default_rng(seed).standard_normal(79) / 100).tolist()]
    bias = [int(np.sign(m)) * sign for m in moves[1:]] + [0]  # bar t knows bar t + 1's move
    params = EvaluationParams(horizons=(1,), block_length=1, seed=seed)
    result: dict[str, Any] = evaluate(series(open_at_100(moves), bias), params).to_dict()["horizons"]["1"]
    return result


def test_a_perfect_foresight_beats_every_shuffle() -> None:
    # 79 decided bars in blocks of 1: a shuffle matching every sign has probability ~1e-22; so p = 1 / 1001.
    random = foresight(1, 8)["baselines"]["random"]
    assert random["p_value"] == pytest.approx(1 / 1001)
    # The reverse signal is beaten (or tied) by every shuffle: p = 1001 / 1001.
    assert foresight(-1, 8)["baselines"]["random"]["p_value"] == 1.0


def test_the_permutation_p_value_is_seeded() -> None:
    moves = [0.0, *(np.random.default_rng(21).standard_normal(199) / 100).tolist()]
    bias = [1 if i % 7 < 4 else -1 for i in range(200)]
    s = series(open_at_100(moves), bias)
    p = [evaluate(s, EvaluationParams(horizons=(1,), seed=seed)).to_dict()["horizons"]["1"] for seed in (1, 1, 2)]
    values = [report["baselines"]["random"]["p_value"] for report in p]
    assert values[0] == values[1]
    assert values[0] != values[2]
    assert 0 < values[0] < 1


# --- real hourly candles -------------------------------------------------------------------------------------


def real_series() -> SignalSeries:
    candles = hourly_candles()
    close = candles.close
    momentum = np.zeros_like(close)
    momentum[24:] = close[24:] / close[:-24] - 1
    score = np.tanh(20 * momentum)
    bias = np.where(score > 0.2, 1, np.where(score < -0.2, -1, 0))
    return SignalSeries.from_arrays(
        open_time=candles.open_time,
        open=candles.open,
        high=candles.high,
        low=candles.low,
        close=close,
        bias=bias,
        score=score,
        confidence=np.abs(score),
        stop=np.where(bias != 0, close * (1 - 0.01 * bias), np.nan),
        target=np.where(bias != 0, close * (1 + 0.02 * bias), np.nan),
        interval_ms=3_600_000,
    )


def test_forward_and_trade_returns_on_real_candles_match_a_plain_loop() -> None:
    s = real_series()
    op, cl, bias = s.open.tolist(), s.close.tolist(), s.bias.tolist()
    n, cost = len(op), 0.001
    outcomes = compute_outcomes(s, (1, 4, 12, 24), cost)
    for h, outcome in outcomes.items():
        expected = [cl[t + h] / op[t + 1] - 1 if t + h < n else math.nan for t in range(n)]
        np.testing.assert_allclose(outcome.forward_return, expected, rtol=1e-12, equal_nan=True)
        trades = [bias[t] * expected[t] - 2 * cost if bias[t] and t + h < n else math.nan for t in range(n)]
        np.testing.assert_allclose(outcome.trade_return, trades, rtol=1e-12, atol=1e-15, equal_nan=True)


def plain_r(s: SignalSeries, t: int, h: int, cost: float) -> tuple[float, int]:
    """The documented stop/target rules, one bar at a time."""
    d, stop, target = int(s.bias[t]), float(s.stop[t]), float(s.target[t])
    entry = float(s.open[t + 1])
    if d * (entry - stop) <= 0:
        return -1.0, STOP
    risk = abs(entry - stop)
    exit_price, reason = float(s.close[t + h]), TIMEOUT
    for k in range(t + 1, t + h + 1):
        o, hi, lo = float(s.open[k]), float(s.high[k]), float(s.low[k])
        worst, best = (lo, hi) if d > 0 else (hi, lo)
        if d * (o - stop) <= 0:
            exit_price, reason = o, STOP
        elif d * (o - target) >= 0:
            exit_price, reason = o, TARGET
        elif d * (worst - stop) <= 0:
            exit_price, reason = stop, STOP
        elif d * (best - target) >= 0:
            exit_price, reason = target, TARGET
        else:
            continue
        break
    return d * (exit_price - entry) / risk - 2 * cost * entry / risk, reason


def test_stop_and_target_outcomes_on_real_candles_match_a_plain_loop() -> None:
    s = real_series()
    n = len(s)
    outcomes = compute_outcomes(s, (4, 24), 0.001)
    for h, outcome in outcomes.items():
        traded = [t for t in range(n - h) if s.bias[t] != 0]
        assert len(traded) > 5_000
        reasons = set()
        for t in traded:
            r, reason = plain_r(s, t, h, 0.001)
            assert outcome.r_multiple[t] == pytest.approx(r, rel=1e-9, abs=1e-12), (h, t)
            assert outcome.exit_reason[t] == reason, (h, t)
            reasons.add(reason)
        assert reasons == {STOP, TARGET, TIMEOUT}  # every rule is exercised


def test_always_long_and_gaps_on_real_candles_match_a_plain_loop() -> None:
    s = real_series()
    op, cl, n = s.open.tolist(), s.close.tolist(), len(s)
    result = evaluate(s, EvaluationParams())
    report = result.to_dict()
    times = s.open_time.tolist()
    assert result.gaps == sum(b - a > 3_600_000 for a, b in itertools.pairwise(times))
    for h in (1, 4, 12, 24):
        gross = [cl[t + h] / op[t + 1] - 1 for t in range(n - h)]
        net = [r - 0.002 for r in gross]
        baseline = report["horizons"][str(h)]["baselines"]["always_long"]
        assert baseline["n"] == len(gross)
        assert baseline["mean_return"] == pytest.approx(sum(net) / len(net), rel=1e-9)
        assert baseline["mean_return_gross"] == pytest.approx(sum(gross) / len(gross), rel=1e-9)
        assert baseline["hit_rate"] == pytest.approx(sum(r > 0 for r in net) / len(net))
        assert baseline["hit_rate_gross"] == pytest.approx(sum(r > 0 for r in gross) / len(gross))
        assert baseline["median_return"] == pytest.approx(statistics.median(net), rel=1e-9)


def test_information_coefficient_on_real_candles_matches_plain_python() -> None:
    s = real_series()
    report = evaluate(s, EvaluationParams(horizons=(24,))).to_dict()["horizons"]["24"]["ic"]
    n = len(s) - 24
    forward = [float(s.close[t + 24] / s.open[t + 1] - 1) for t in range(n)]
    assert report["n"] == n
    rho = report["spearman"]
    assert rho == pytest.approx(plain_spearman(s.score[:n].tolist(), forward), rel=1e-9)
    assert report["t_stat"] == pytest.approx(rho * math.sqrt((n - 2) / (1 - rho**2)))
    assert report["t_stat_adjusted"] == pytest.approx(report["t_stat"] / math.sqrt(24))
