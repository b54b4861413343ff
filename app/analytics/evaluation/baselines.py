"""What the signal must beat, under the same entry, exit and cost rules.

* ``always_long``: a long trade on every bar whose forward return is defined (``n`` is that count), net and gross.
* ``random``: the same exposure with the bias shuffled in blocks (``permutation.py``): the mean of the permuted
  mean returns, net and gross, and the strategy's p-value against them. Null when ``all`` is insufficient.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from app.analytics.evaluation import stats
from app.analytics.evaluation.bootstrap import rng_for
from app.analytics.evaluation.inputs import EvaluationParams, SignalSeries
from app.analytics.evaluation.metrics import Json
from app.analytics.evaluation.outcomes import Outcomes
from app.analytics.evaluation.permutation import block_orders, p_value, permuted_sums


def always_long(outcomes: Outcomes, params: EvaluationParams, cost: float) -> Json:
    gross = stats.valid(outcomes.forward_return)
    net = gross - 2 * cost
    n = int(gross.size)
    if n < params.min_signals:
        names = ("hit_rate", "hit_rate_gross", "mean_return", "mean_return_gross", "median_return")
        return {"n": n, "insufficient": True} | dict.fromkeys(names, math.nan)
    return {
        "n": n,
        "insufficient": False,
        "hit_rate": stats.hit_rate(net),
        "hit_rate_gross": stats.hit_rate(gross),
        "mean_return": float(net.mean()),
        "mean_return_gross": float(gross.mean()),
        "median_return": float(np.median(net)),
    }


def random_bias(
    series: SignalSeries,
    outcomes: Outcomes,
    params: EvaluationParams,
    cost: float,
    orders: dict[int, NDArray[np.intp]] | None = None,
) -> Json:
    """``orders`` caches the block orders by block count across horizons (drawn from the seed alone, so every
    horizon with the same count is tested against the same shuffles and the result does not depend on order)."""
    cache = {} if orders is None else orders

    def orders_for(blocks: int) -> NDArray[np.intp]:
        if blocks not in cache:
            cache[blocks] = block_orders(blocks, params.permutations, rng_for(params.seed, "random", blocks))
        return cache[blocks]

    defined = np.isfinite(outcomes.forward_return)
    bias = series.bias[defined].astype(np.float64)
    forward = outcomes.forward_return[defined]
    n = int(np.count_nonzero(bias))
    h = outcomes.horizon
    block = params.permutation_block_for(h, int(bias.size))
    figures: Json = {"n": n, "permutations": params.permutations, "block_length": block}
    if n < params.min_signals:
        names = ("mean_return", "mean_return_gross", "p_value")
        return figures | {"insufficient": True} | dict.fromkeys(names, math.nan)
    actual, permuted = permuted_sums(bias, forward, block, orders_for)
    gross = float(permuted.mean()) / n if permuted.size else math.nan
    return figures | {
        "insufficient": False,
        "mean_return": gross - 2 * cost,
        "mean_return_gross": gross,
        "p_value": p_value(actual, permuted, float(np.abs(forward).sum())),
    }
