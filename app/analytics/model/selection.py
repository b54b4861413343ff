"""Honest selection: the Deflated Sharpe Ratio (Bailey & López de Prado, 2014) of the configuration kept.

Trying many configurations and keeping the best inflates its Sharpe ratio. The DSR is the probability that the
kept strategy's true Sharpe ratio exceeds the best one expected from ``trials`` strategies with no skill:

    SR0 = sqrt(V[SR_k]) · ((1 - g) · Φ⁻¹(1 - 1/N) + g · Φ⁻¹(1 - 1/(N·e)))        (g: Euler-Mascheroni)
    DSR = Φ((SR - SR0) · sqrt(T - 1) / sqrt(1 - skew · SR + (kurtosis - 1) / 4 · SR²))

``SR`` is the kept strategy's Sharpe ratio per observation (not annualised) over ``T`` observations, ``skew``
and ``kurtosis`` (not excess) those of its returns, ``V[SR_k]`` the variance of the Sharpe ratios of all ``N``
configurations tried. With ``N = 1`` SR0 is 0 and the DSR is the Probabilistic Sharpe Ratio against zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from app.analytics.types import FloatArray

EULER_GAMMA = 0.5772156649015329
NORMAL = NormalDist()


@dataclass(frozen=True, slots=True)
class DeflatedSharpe:
    sharpe: float  # per observation
    observations: int
    trials: int
    trial_variance: float
    expected_max: float  # SR0: the best Sharpe ratio expected from `trials` unskilled strategies
    probability: float  # the DSR


def expected_max_sharpe(trial_variance: float, trials: int) -> float:
    if trials <= 1 or not trial_variance > 0:
        return 0.0
    first = NORMAL.inv_cdf(1 - 1 / trials)
    second = NORMAL.inv_cdf(1 - 1 / (trials * math.e))
    return math.sqrt(trial_variance) * ((1 - EULER_GAMMA) * first + EULER_GAMMA * second)


def deflated_sharpe(returns: FloatArray, trial_sharpes: FloatArray, trials: int) -> DeflatedSharpe:
    """The DSR of ``returns`` (the kept configuration's trades) among ``trials`` configurations whose Sharpe
    ratios are ``trial_sharpes`` (NaNs, configurations that never traded enough, are left out of the variance
    but still counted in ``trials``)."""
    finite = trial_sharpes[np.isfinite(trial_sharpes)]
    variance = float(np.var(finite, ddof=1)) if finite.size > 1 else 0.0
    floor = expected_max_sharpe(variance, trials)
    t = int(returns.shape[0])
    if t < 3 or float(np.std(returns)) == 0.0:
        return DeflatedSharpe(math.nan, t, trials, variance, floor, math.nan)
    sd = float(np.std(returns, ddof=1))
    sharpe = float(np.mean(returns)) / sd
    centred = (returns - returns.mean()) / float(np.std(returns))
    skew, kurtosis = float(np.mean(centred**3)), float(np.mean(centred**4))
    spread = 1 - skew * sharpe + (kurtosis - 1) / 4 * sharpe**2
    probability = NORMAL.cdf((sharpe - floor) * math.sqrt(t - 1) / math.sqrt(spread)) if spread > 0 else math.nan
    return DeflatedSharpe(sharpe, t, trials, variance, floor, probability)
