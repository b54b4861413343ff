"""How the learned model's walk-forward predictions did: calibration and the decided set after fees.

Over the bars where the model stated a probability and the outcome is known (``stated``):

* hit: following the preferred side won after fees, ``side · r - 2c > 0`` (the evaluation's hit: a net return
  strictly above zero);
* Brier score ``mean((p - hit)²)`` and the reference Brier of always stating the realised hit rate of the same bars
  (hindsight climatology, a slightly flattering reference); skill ``1 - Brier / reference``;
* reliability: ``deciles`` equal-count groups by stated probability (ties split stably by bar), each with its mean
  stated probability, realised hit rate, n, and its independent outcomes: how many of its bars' h-bar outcomes a
  single account could follow without overlap (``stats.non_overlapping``). Neighbouring bars state nearly the same
  probability and share h - 1 bars of outcome, so a decile of 2 000 hourly bars at h = 24 holds ~80 independent
  outcomes: its realised rate's standard error is then ~5.5 points, the issue's whole tolerance. The issue's target
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
    independent: int  # non-overlapping outcomes among the group's bars

    @property
    def standard_error(self) -> float:
        """Of the realised rate, were the stated probability true, over the independent outcomes."""
        p = min(max(self.stated, 0.0), 1.0)
        return math.sqrt(p * (1 - p) / self.independent) if self.independent else math.nan

    def within(self, tolerance: float) -> float:
        """The probability that a perfectly calibrated group of this size lands within ``tolerance``."""
        error = self.standard_error
        if not error > 0:
            return 1.0
        return 2 * NORMAL.cdf(tolerance / error) - 1


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
    """``bars``: the bar index of every row (sorted), for counting each group's independent outcomes."""
    order = np.argsort(probability, kind="stable")
    groups = np.array_split(order, min(deciles, max(1, probability.shape[0])))
    return tuple(
        ReliabilityRow(
            int(g.size),
            float(probability[g].mean()),
            float(hit[g].mean()),
            int(stats.non_overlapping(np.sort(bars[g]), horizon).size),
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
