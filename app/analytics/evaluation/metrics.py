"""Headline figures of one horizon: per bias group, the information coefficient and the calibration table.

* Decided signal: a long or short bar whose horizon has elapsed. Groups: ``all`` (long and short), ``long``,
  ``short``. Neutral bars are not trades.
* Every return figure is net of costs (``mean_return_gross`` shows what the costs took). A hit is a net return
  strictly above zero.
* ``expectancy_r`` is the mean R outcome over the decided signals that published a stop (``n_r`` of them).
* ``sharpe`` (per trade) and ``max_drawdown`` come from following the bias with one account: non-overlapping trades
  only (``n_trades``), see :func:`stats.non_overlapping`. Every other figure uses every decided signal.
* Intervals: 95 % circular block bootstrap (``bootstrap.py``), for ``mean_return`` and ``expectancy_r``; when every
  decided signal has a stop the two share their resamples (a paired bootstrap of the same trades). The block
  length used is reported as ``bootstrap_block``.
* Fewer than ``min_signals`` decided signals: ``insufficient: true`` and every figure null, ``n`` still reported.
  The same floor applies to each figure's own sample (``n_r``, ``n_trades``, a calibration bucket, the IC's bars).
* IC: Spearman's rank correlation of ``score`` with the gross forward return over every bar whose forward return is
  defined (neutral bars included: the score is graded even when no trade is taken). Its t-statistic assumes
  independent pairs; overlapping h-bar returns make that optimistic by about ``sqrt(h)``, so ``t_stat_adjusted``
  divides by it.
* Calibration: ``calibration_buckets`` equal-width confidence buckets over [0, 1] (the last one closed), each with
  its decided signals' realised hit rate.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.analytics.evaluation import stats
from app.analytics.evaluation.bootstrap import block_bootstrap_mean, block_starts, rng_for
from app.analytics.evaluation.inputs import EvaluationParams, FloatArray, SignalSeries
from app.analytics.evaluation.outcomes import Outcomes

GROUPS = ("all", "long", "short")


def in_group(bias: NDArray[np.int8], group: str) -> NDArray[np.bool_]:
    wanted = {"all": 0, "long": 1, "short": -1}[group]
    mask: NDArray[np.bool_] = bias != 0 if wanted == 0 else bias == wanted
    return mask


Json = dict[str, Any]


def _or_nan(value: float, n: int, floor: int) -> float:
    return value if n >= floor else math.nan


def _interval(low_high: tuple[float, float]) -> list[float]:
    return [low_high[0], low_high[1]]


def group_metrics(series: SignalSeries, outcomes: Outcomes, group: str, params: EvaluationParams, cost: float) -> Json:
    """The figures of one bias group at one horizon (floats may be NaN; the report makes them JSON-safe)."""
    decided = in_group(series.bias, group) & np.isfinite(outcomes.trade_return)
    bars = np.flatnonzero(decided)
    returns = outcomes.trade_return[bars]
    r = stats.valid(outcomes.r_multiple, decided)
    n, floor, h = int(bars.size), params.min_signals, outcomes.horizon
    taken = returns[stats.non_overlapping(bars, h)]
    figures: Json = {"n": n, "insufficient": n < floor, "n_r": int(r.size), "n_trades": int(taken.size)}
    if n < floor:
        names = ("hit_rate", "mean_return", "mean_return_gross", "median_return", "profit_factor", "expectancy_r")
        figures |= dict.fromkeys(names, math.nan)
        figures |= {"mean_return_ci": [math.nan, math.nan], "expectancy_r_ci": [math.nan, math.nan]}
        return figures | {"sharpe": math.nan, "max_drawdown": math.nan, "bootstrap_block": None}
    resamples, block = params.bootstrap_resamples, params.block_for(h, n)
    starts = block_starts(n, block, resamples, rng_for(params.seed, h, group, "returns"))
    enough_r = r.size >= floor
    nan_pair = (math.nan, math.nan)
    if r.size == n:  # every decided signal had a stop: resample returns and R outcomes together
        return_ci, r_ci = block_bootstrap_mean(returns, block, starts), block_bootstrap_mean(r, block, starts)
    else:
        return_ci, r_ci = block_bootstrap_mean(returns, block, starts), nan_pair
        if enough_r:
            r_block = params.block_for(h, r.size)
            r_starts = block_starts(r.size, r_block, resamples, rng_for(params.seed, h, group, "r"))
            r_ci = block_bootstrap_mean(r, r_block, r_starts)
    return figures | {
        "bootstrap_block": block,
        "hit_rate": stats.hit_rate(returns),
        "mean_return": float(returns.mean()),
        "mean_return_gross": float(returns.mean()) + 2 * cost,
        "median_return": float(np.median(returns)),
        "profit_factor": stats.profit_factor(returns),
        "mean_return_ci": _interval(return_ci),
        "expectancy_r": float(r.mean()) if enough_r else math.nan,
        "expectancy_r_ci": _interval(r_ci) if enough_r else [math.nan, math.nan],
        "sharpe": _or_nan(stats.sharpe(taken), taken.size, floor),
        "max_drawdown": _or_nan(stats.max_drawdown(taken), taken.size, floor),
    }


def information_coefficient(series: SignalSeries, outcomes: Outcomes, params: EvaluationParams) -> Json:
    defined = np.isfinite(outcomes.forward_return)
    n = int(np.count_nonzero(defined))
    if n < params.min_signals:
        return {"n": n, "insufficient": True, "spearman": math.nan, "t_stat": math.nan, "t_stat_adjusted": math.nan}
    rho = stats.spearman(series.score[defined], outcomes.forward_return[defined])
    t = stats.correlation_t(rho, n)
    adjusted = t / math.sqrt(outcomes.horizon)
    return {"n": n, "insufficient": False, "spearman": rho, "t_stat": t, "t_stat_adjusted": adjusted}


def calibration(series: SignalSeries, outcomes: Outcomes, params: EvaluationParams) -> list[Json]:
    decided: NDArray[np.bool_] = (series.bias != 0) & np.isfinite(outcomes.trade_return)
    count = params.calibration_buckets
    bucket = np.minimum((series.confidence * count).astype(np.int64), count - 1)
    table: list[Json] = []
    for index in range(count):
        members = decided & (bucket == index)
        n = int(np.count_nonzero(members))
        returns: FloatArray = outcomes.trade_return[members]
        enough = n >= params.min_signals
        table.append(
            {
                "lower": index / count,
                "upper": (index + 1) / count,
                "n": n,
                "hit_rate": stats.hit_rate(returns) if enough else math.nan,
                "mean_confidence": float(series.confidence[members].mean()) if enough else math.nan,
            }
        )
    return table
