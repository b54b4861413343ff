"""How the study keeps a configuration: the best criterion, then the one-standard-error rule along its shrinkage
path (app/analytics/study/run.py), on trials whose trade streams are built to give known Sharpe ratios."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.analytics.model import ModelParams
from app.analytics.study.ic import InformationCoefficient
from app.analytics.study.run import Trial, configurations, keep
from app.analytics.study.scoring import ModelFigures


def _trades(sharpe: float, count: int) -> np.ndarray:
    """``count`` returns whose per-trade Sharpe ratio is exactly ``sharpe`` (alternating ±1 around the mean)."""
    spread = np.where(np.arange(count) % 2 == 0, 1.0, -1.0)
    spread /= spread.std(ddof=1)
    return sharpe + spread


def _figures(sharpe: float, count: int) -> ModelFigures:
    return ModelFigures(
        horizon=24, stated=0, brier=math.nan, brier_reference=math.nan, reliability=(), decided=count,
        decided_hit_rate=math.nan, decided_stated=math.nan, decided_mean=math.nan, decided_t=math.nan,
        decided_long_share=math.nan, always_long_mean=math.nan, trades=_trades(sharpe, count),
        ic=InformationCoefficient(0, math.nan, math.nan, 0),
    )  # fmt: skip


def _trial(params: ModelParams, sharpes: tuple[float, ...], count: int = 100) -> Trial:
    return Trial(params, {f"s{i}": _figures(s, count) for i, s in enumerate(sharpes)})


BASE = ModelParams(horizon=24, window=500, l2=1.0)


def _spacing(spacing: float) -> ModelParams:
    return ModelParams(horizon=24, window=500, l2=1.0, outcome_spacing=spacing)


def test_the_criterion_and_its_standard_error() -> None:
    trial = _trial(BASE, (0.2, 0.1), count=100)
    assert trial.criterion == pytest.approx(0.15)
    # Lo (2002): se of a Sharpe ratio over T trades sqrt((1 + SR^2 / 2) / T); the mean of two series.
    expected = math.sqrt((1 + 0.02) / 100 + (1 + 0.005) / 100) / 2
    assert trial.criterion_error == pytest.approx(expected)
    few = Trial(BASE, {"a": _figures(0.5, 10), "b": _figures(0.2, 100)})  # under 30 trades: counted as 0
    assert few.criterion == pytest.approx(0.1)
    assert few.criterion_error == pytest.approx(math.sqrt(1.02 / 100) / 2)


def test_the_most_conservative_spacing_within_one_standard_error_is_kept() -> None:
    best = _trial(_spacing(1.0), (0.20, 0.20))  # criterion 0.20, se ~0.071
    close = _trial(_spacing(2.0), (0.16, 0.16))  # within one se
    far = _trial(_spacing(4.0), (0.05, 0.05))  # beyond it
    other = _trial(ModelParams(horizon=12, window=500, l2=1.0, outcome_spacing=4.0), (0.19, 0.19))  # another path
    wider = _trial(ModelParams(horizon=24, window=1_000, l2=1.0, outcome_spacing=4.0), (0.19, 0.19))  # and another
    assert keep([best, close, far, other, wider]) is close
    assert keep([best, far, other, wider]) is best
    assert keep([close, best]) is close  # grid order does not matter to the rule
    farthest = _trial(_spacing(4.0), (0.14, 0.14))  # also within one se: the largest spacing wins
    assert keep([best, close, farthest]) is farthest


def test_then_the_strongest_ridge() -> None:
    best = _trial(ModelParams(horizon=24, window=500, l2=0.01, outcome_spacing=2.0), (0.20, 0.20))
    ridged = _trial(ModelParams(horizon=24, window=500, l2=1.0, outcome_spacing=2.0), (0.17, 0.17))
    shallower = _trial(ModelParams(horizon=24, window=500, l2=1.0, outcome_spacing=1.0), (0.19, 0.19))
    assert keep([best, ridged, shallower]) is ridged  # spacing first, then the ridge
    assert keep([best, shallower]) is best  # a smaller spacing is never more conservative


def test_the_correlated_bound_widens_the_band() -> None:
    best = _trial(_spacing(1.0), (0.20, 0.20))  # se 0.071 independent, 0.100 perfectly correlated
    between = _trial(_spacing(4.0), (0.115, 0.115))
    assert keep([best, between]) is best
    assert keep([best, between], correlated=True) is between


def test_an_undefined_criterion_ranks_last() -> None:
    empty = Trial(BASE)  # no series: the criterion is NaN
    assert math.isnan(empty.criterion)
    scored = _trial(ModelParams(horizon=24, window=500, l2=1.0, shrink=False), (0.1, 0.1))
    assert keep([empty, scored]) is scored


def test_a_best_without_shrinkage_is_kept_as_it_is() -> None:
    plain = _trial(ModelParams(horizon=24, window=500, l2=1.0, shrink=False), (0.3, 0.3))
    shrunk = _trial(_spacing(2.0), (0.28, 0.28))
    assert keep([shrunk, plain]) is plain


def test_the_grid_tries_each_spacing_with_shrinkage_and_one_without() -> None:
    grid = configurations(0.001, windows=(500,), l2s=(1.0,), horizons=(24,))
    assert [(p.shrink, p.outcome_spacing) for p in grid] == [(True, 1.0), (True, 2.0), (True, 4.0), (False, 1.0)]
    assert len(configurations(0.001)) == 96
