"""How the learned model's walk-forward predictions did: calibration and the decided set after fees.

Over the bars where the model stated a probability and the outcome is known (``stated``):

* hit: following the preferred side won after fees, ``side · r - 2c > 0`` (the evaluation's hit: a net return
  strictly above zero);
* Brier score ``mean((p - hit)²)`` and the reference Brier of always stating the realised hit rate of the same bars
  (hindsight climatology, a slightly flattering reference); skill ``1 - Brier / reference``;
* reliability: ``deciles`` equal-count groups by stated probability (ties split stably by bar), each with its mean
  stated probability, realised hit rate, n, and its effective sample size (``effective_outcomes``). Neighbouring
  bars state nearly the same probability and their h-bar outcomes share up to h - 1 bars, so the hits in a group
  are correlated: a group of ~2 000 hourly bars at h = 24 packed in runs counts as ~110 independent outcomes, and
  its realised rate's standard error is then ~4.7 points, nearly the issue's whole tolerance. The issue's target
  compares stated and realised in every group of ≥ 30; the report also says whether the gap is within noise;
* decided set: bars where the model took a side (expected return after fees > 0): n, hit rate, mean stated
  probability, mean return after fees, and its Newey-West t (``ic.newey_west_t``, ``ic.newey_west_lags``) on the
  per-bar series that is the trade's return where decided and 0 elsewhere (the t of "following the model earns
  nothing": the decided mean's t, with the overlap of h-bar trades accounted for);
* baseline: the mean after fees of always going long over the same stated bars, and the decided set's share of
  longs — in a market that rose as BTC did in 2015-2019 a model can beat zero by learning the drift alone, so the
  decided mean is read against always-long;
* one account following it: the non-overlapping decided trades (``evaluation.stats.non_overlapping``) and their
  per-trade Sharpe ratio — the return stream the Deflated Sharpe Ratio is computed on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from app.analytics.evaluation import stats
from app.analytics.model import Predictions
from app.analytics.study.ic import InformationCoefficient, newey_west_lags, newey_west_t, rank_ic
from app.analytics.types import FloatArray, IntArray

NORMAL = NormalDist()
MIN_TRADES = 30  # the evaluation's floor: no headline figure below 30 observations


@dataclass(frozen=True, slots=True)
class ReliabilityRow:
    n: int
    stated: float
    realised: float
    effective: float  # the group's effective number of independent outcomes (``effective_outcomes``)

    @property
    def standard_error(self) -> float:
        """Of the realised rate, were the stated probability true, over the effective outcomes."""
        p = min(max(self.stated, 0.0), 1.0)
        return math.sqrt(p * (1 - p) / self.effective) if self.effective > 0 else math.nan

    def within(self, tolerance: float) -> float:
        """The probability that a perfectly calibrated group of this size lands within ``tolerance`` (NaN
        without a defined standard error)."""
        error = self.standard_error
        if not error > 0:
            return math.nan
        return 2 * NORMAL.cdf(tolerance / error) - 1


def effective_outcomes(bars: IntArray, horizon: int) -> float:
    """``n^2 / sum_ij rho(|t_i - t_j|)`` for the hits of the bars ``t`` (sorted, distinct): the number of independent
    outcomes whose mean would be as noisy as this group's.

    Assumption: the overlap of h-bar outcomes is the only dependence (independent bar returns, roughly Gaussian
    h-bar sums). Two h-bar returns ``d`` bars apart then correlate ``1 - d / h``, and the indicators of their signs
    ``(2 / pi) arcsin(1 - d / h)`` (the orthant probability of a bivariate normal; the fee threshold is small
    against an h-bar move). Regimes that persist past the horizon would make the true count smaller."""
    n = int(bars.shape[0])
    if n == 0 or horizon <= 1:
        return float(n)
    present = np.zeros(int(bars[-1] - bars[0]) + 1, dtype=bool)
    present[bars - bars[0]] = True
    total = float(n)
    for gap in range(1, min(horizon, present.shape[0])):
        pairs = int(np.count_nonzero(present[:-gap] & present[gap:]))
        total += 2 * pairs * (2 / math.pi) * math.asin(1 - gap / horizon)
    return n * n / total


@dataclass(frozen=True, slots=True, eq=False)
class ModelFigures:
    horizon: int
    stated: int
    brier: float
    brier_reference: float
    reliability: tuple[ReliabilityRow, ...]
    decided: int
    decided_hit_rate: float
    decided_stated: float
    decided_mean: float
    decided_t: float
    decided_long_share: float
    always_long_mean: float  # mean after fees of a long on every stated bar
    trades: FloatArray  # non-overlapping decided trades' returns after fees, in bar order
    ic: InformationCoefficient  # the model's log-odds score against the forward return

    @property
    def sharpe(self) -> float:
        """Per trade, of the non-overlapping trades; NaN below ``MIN_TRADES`` (a config that barely trades)."""
        return stats.sharpe(self.trades) if self.trades.size >= MIN_TRADES else math.nan

    @property
    def brier_skill(self) -> float:
        return 1 - self.brier / self.brier_reference if self.brier_reference > 0 else math.nan


def reliability(
    probability: FloatArray, hit: FloatArray, bars: IntArray, horizon: int, deciles: int
) -> tuple[ReliabilityRow, ...]:
    """``bars``: the bar index of every row (sorted), for each group's effective number of outcomes."""
    order = np.argsort(probability, kind="stable")
    groups = np.array_split(order, min(deciles, max(1, probability.shape[0])))
    return tuple(
        ReliabilityRow(
            int(g.size),
            float(probability[g].mean()),
            float(hit[g].mean()),
            effective_outcomes(np.sort(bars[g]), horizon),
        )
        for g in groups
        if g.size
    )


def score_predictions(
    predictions: Predictions, forward: FloatArray, horizon: int, cost_per_side: float, deciles: int = 10
) -> ModelFigures:
    round_trip = 2 * cost_per_side
    known = np.isfinite(predictions.probability) & np.isfinite(forward)
    p = predictions.probability[known]
    net = predictions.preferred[known] * forward[known] - round_trip
    hit = (net > 0).astype(np.float64)
    base = float(hit.mean()) if hit.size else math.nan
    decided = known & (predictions.side != 0)
    decided_net = predictions.side[decided] * forward[decided] - round_trip
    per_bar = np.where(decided, predictions.side * forward - round_trip, 0.0)[known]
    bars = np.flatnonzero(decided)
    trades = decided_net[stats.non_overlapping(bars, horizon)]
    return ModelFigures(
        horizon=horizon,
        stated=int(p.size),
        brier=float(np.mean((p - hit) ** 2)) if p.size else math.nan,
        brier_reference=base * (1 - base),
        reliability=reliability(p, hit, np.flatnonzero(known), horizon, deciles),
        decided=int(bars.size),
        decided_hit_rate=stats.hit_rate(decided_net),
        decided_stated=float(predictions.probability[decided].mean()) if bars.size else math.nan,
        decided_mean=float(decided_net.mean()) if bars.size else math.nan,
        decided_t=newey_west_t(per_bar, newey_west_lags(horizon, per_bar.size)) if bars.size else math.nan,
        decided_long_share=float(np.mean(predictions.side[decided] > 0)) if bars.size else math.nan,
        always_long_mean=float(np.mean(forward[known])) - round_trip if p.size else math.nan,
        trades=trades,
        ic=rank_ic(predictions.score, forward, horizon),
    )
