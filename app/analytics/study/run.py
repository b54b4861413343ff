"""The whole study over several series: component ICs, the model's configurations, the one kept and its DSR.

Design choices of the model are selected by walk-forward, which is purged by construction: a prediction at bar
``t`` uses only rows whose outcome span ended by ``t`` (``t' + h <= t``), so no training sample's horizon overlaps
the test sample's, and nothing after ``t`` is read (an embargo would matter only for training rows after the test
row, which walk-forward never has; inside each fit the calibration folds are purged and embargoed,
``model.calibrated``).

Configurations (every one counted, ``configurations``): window of 500, 1 000 or 2 000 bars x ridge ``l2`` of 1 or
0.01 x horizon of 1, 4, 12 or 24 bars x calibration: shrinkage off, or on counting one independent outcome per 1, 2
or 4 horizons (``ModelParams.outcome_spacing``) = 96; the other parameters stay at their documented defaults (5
folds, embargo = h, 10 calibration bins, 200 rows minimum) and were not varied. The history of the grid, all of it
counted: a first study ran the 24 without shrinkage (their stated probabilities followed the trailing drift); the
shrinkage (spacing 1) was designed after it, 48 configurations; the spacings 2 and 4 were added after the 48 showed
the kept model still overconfident in its top decile (stated 0.63, won 0.50 on hourly bars), 96. Two ridge values
only, for run time: the isotonic maps re-scale the score, so the ridge acts only through the direction of the
coefficients. (A first run that also had l2 = 0.1 was stopped after 9 configurations for time; its results were
never read.)

One configuration is kept for every timeframe (defaults cannot depend on data the signal has not seen), in two
steps:

1. the best criterion: the mean, over the series, of the per-trade Sharpe ratio of its non-overlapping decided
   trades after fees, a series where it made fewer than 30 such trades counting 0 (a model that abstains earns
   nothing, and too few trades measure nothing). Ties go to the earlier configuration in grid order (shorter
   window, stronger ridge, more shrinkage… see ``configurations``);
2. the one-standard-error rule along its regularisation paths (Breiman et al., as glmnet's ``lambda.1se``): of
   the same horizon and window with shrinkage on, the configurations whose criterion is within one standard error
   of the best's, and of those the most regularised: the largest outcome spacing, then the strongest ridge. The
   criterion's differences between neighbouring spacings or ridges are noise at these sample sizes (tens to
   hundreds of independent trades per series), and of models the data cannot tell apart the more conservative one
   states probabilities nearer the no-edge value. The standard error is ``sqrt(sum(se_i^2)) / k`` over the ``k``
   series, ``se_i = sqrt((1 + SR_i^2 / 2) / T_i)`` (Lo, 2002: iid returns; fat tails widen it) for a series'
   Sharpe ratio over ``T_i`` trades (0 for a series counted as 0). It treats the series as independent, which they
   are not (one asset, overlapping years): the true error is larger, and the study reports how the kept
   configuration would change were the series perfectly correlated (``se = mean(se_i)``). This step was decided on
   in the same session as the spacings, after a first look at spacings 1, 2 and 4 of the then-kept model.

Its Deflated Sharpe Ratio is computed per series against the Sharpe ratios of all the configurations on that series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from app.analytics.model import DeflatedSharpe, ModelParams, deflated_sharpe, walk_forward
from app.analytics.series.features import WARMUP_BARS
from app.analytics.signals import COMPONENTS
from app.analytics.study.ic import InformationCoefficient, rank_ic
from app.analytics.study.inputs import StudyInputs
from app.analytics.study.scoring import ModelFigures, score_predictions

HORIZONS = (1, 4, 12, 24)
WINDOWS = (500, 1_000, 2_000)
L2S = (1.0, 0.01)  # strongest first: on a tie the simpler (more shrunk) model is kept
SHRINKS = (True, False)  # likewise: calibration shrinkage first
SPACINGS = (1.0, 2.0, 4.0)  # outcome spacings (in horizons) tried with shrinkage on; the least conservative first
COLUMNS = (*COMPONENTS, "score")


def configurations(
    cost_per_side: float,
    windows: tuple[int, ...] = WINDOWS,
    l2s: tuple[float, ...] = L2S,
    horizons: tuple[int, ...] = HORIZONS,
    shrinks: tuple[bool, ...] = SHRINKS,
    spacings: tuple[float, ...] = SPACINGS,
) -> tuple[ModelParams, ...]:
    return tuple(
        ModelParams(horizon=h, window=w, l2=l2, cost_per_side=cost_per_side, shrink=shrink, outcome_spacing=spacing)
        for h in horizons
        for w in windows
        for l2 in l2s
        for shrink in shrinks
        for spacing in (spacings if shrink else (1.0,))  # the spacing means nothing without shrinkage
    )


def component_ics(inputs: StudyInputs, horizons: tuple[int, ...]) -> dict[tuple[str, int], InformationCoefficient]:
    """IC of every component and of the combined score with every horizon's forward return."""
    return {(name, h): rank_ic(inputs.column(name), inputs.forward[h], h) for name in COLUMNS for h in horizons}


@dataclass(frozen=True, slots=True, eq=False)
class Trial:
    params: ModelParams
    figures: dict[str, ModelFigures] = field(default_factory=dict)  # series name -> walk-forward figures

    @property
    def criterion(self) -> float:
        values = [f.sharpe if math.isfinite(f.sharpe) else 0.0 for f in self.figures.values()]
        return sum(values) / len(values) if values else math.nan

    def _errors(self) -> list[float]:
        return [
            math.sqrt((1 + f.sharpe**2 / 2) / f.trades.size) for f in self.figures.values() if math.isfinite(f.sharpe)
        ]

    @property
    def criterion_error(self) -> float:
        """The criterion's standard error, the series taken as independent (see the module docstring); a series
        counted as 0 adds none."""
        return math.sqrt(sum(e**2 for e in self._errors())) / len(self.figures) if self.figures else math.nan

    @property
    def criterion_error_correlated(self) -> float:
        """The same, the series' Sharpe ratios taken as perfectly correlated: the upper bound."""
        return sum(self._errors()) / len(self.figures) if self.figures else math.nan


def run_trial(params: ModelParams, series: dict[str, StudyInputs], strides: dict[str, int]) -> Trial:
    trial = Trial(params)
    for name, inputs in series.items():
        forward = inputs.forward[params.horizon]
        predictions = walk_forward(inputs.features, forward, params, start=WARMUP_BARS, stride=strides[name])
        trial.figures[name] = score_predictions(predictions, forward, params.horizon, params.cost_per_side)
    return trial


def _ranked(trial: Trial) -> float:
    return trial.criterion if math.isfinite(trial.criterion) else -math.inf


def best(trials: list[Trial]) -> Trial:
    """The highest criterion (an undefined one ranks last), the earliest in grid order on a tie."""
    found = trials[0]
    for trial in trials[1:]:
        if _ranked(trial) > _ranked(found):
            found = trial
    return found


def keep(trials: list[Trial], *, correlated: bool = False) -> Trial:
    """The configuration kept: the best, then the one-standard-error rule along its regularisation paths
    (``correlated``: with the upper-bound standard error, for the report's sensitivity line)."""
    top = best(trials)
    if not top.params.shrink:
        return top
    floor = top.criterion - (top.criterion_error_correlated if correlated else top.criterion_error)
    within = [
        t
        for t in trials
        if t.params.shrink
        and (t.params.horizon, t.params.window) == (top.params.horizon, top.params.window)
        and _ranked(t) >= floor
    ]
    # The most regularised: the largest spacing, then the strongest ridge (a larger l2); `top` always qualifies.
    return max(within, key=lambda t: (t.params.outcome_spacing, t.params.l2), default=top)


def deflate(trials: list[Trial], kept: Trial) -> dict[str, DeflatedSharpe]:
    result = {}
    for name, figures in kept.figures.items():
        sharpes = np.array([trial.figures[name].sharpe for trial in trials])
        result[name] = deflated_sharpe(figures.trades, sharpes, len(trials))
    return result
