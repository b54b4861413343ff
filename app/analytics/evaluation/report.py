"""Evaluate a signal series: every horizon's figures, their JSON shape and the compact summary.

``evaluate(series, params)`` returns an :class:`Evaluation`; ``to_dict()`` gives, per horizon,
``{"all", "long", "short", "baselines": {"always_long", "random"}, "calibration", "ic", …}`` with every float
JSON-safe (NaN and infinities become null) and ``summary()`` the few figures embedded in every signal response.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.analytics.evaluation.baselines import always_long, random_bias
from app.analytics.evaluation.inputs import EvaluationParams, SignalSeries
from app.analytics.evaluation.metrics import GROUPS, Json, calibration, group_metrics, information_coefficient
from app.analytics.evaluation.outcomes import Outcomes, compute_outcomes


def json_safe(value: Any) -> Any:
    """Floats that are NaN or infinite become None, recursively; numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    return value


@dataclass(frozen=True, slots=True, eq=False)
class HorizonReport:
    horizon: int
    outcomes: Outcomes
    figures: Json = field(repr=False)

    def to_dict(self) -> Json:
        result: Json = json_safe(self.figures)
        return result

    def summary(self) -> Json:
        group = self.figures["all"]
        result: Json = json_safe(
            {
                "horizon": self.horizon,
                "n": group["n"],
                "insufficient": group["insufficient"],
                "hit_rate": group["hit_rate"],
                "expectancy_r": group["expectancy_r"],
                "expectancy_r_ci": group["expectancy_r_ci"],
                "p_value": self.figures["baselines"]["random"]["p_value"],
            }
        )
        return result


@dataclass(frozen=True, slots=True, eq=False)
class Evaluation:
    bars: int
    gaps: int
    missing_bars: int
    params: EvaluationParams
    horizons: dict[int, HorizonReport]

    def to_dict(self) -> Json:
        return {
            "bars": self.bars,
            "gaps": self.gaps,
            "missing_bars": self.missing_bars,
            "fee_bps": self.params.fee_bps,
            "slippage_bps": self.params.slippage_bps,
            "min_signals": self.params.min_signals,
            "horizons": {str(h): report.to_dict() for h, report in self.horizons.items()},
        }

    def summary(self) -> list[Json]:
        """Per horizon: n, hit rate, expectancy in R with its interval, p-value against the random baseline."""
        return [report.summary() for report in self.horizons.values()]


def evaluate(series: SignalSeries, params: EvaluationParams | None = None) -> Evaluation:
    params = params or EvaluationParams()
    cost = params.cost_per_side
    all_outcomes = compute_outcomes(series, params.horizons, cost)
    reports: dict[int, HorizonReport] = {}
    orders: dict[int, NDArray[np.intp]] = {}
    evaluated = series.evaluated()
    for h, outcomes in all_outcomes.items():
        traded = (series.bias != 0) & evaluated
        decided = traded & np.isfinite(outcomes.trade_return)
        figures: Json = {
            "horizon": h,
            "decided": int(np.count_nonzero(decided)),
            "pending": int(np.count_nonzero(traded & ~decided)),
            "neutral": int(np.count_nonzero(~traded & evaluated)),
            "spanning_gaps": int(np.count_nonzero(decided & outcomes.spans_gap)),
        }
        figures |= {group: group_metrics(series, outcomes, group, params, cost) for group in GROUPS}
        figures["baselines"] = {
            "always_long": always_long(outcomes, params, cost),
            "random": random_bias(series, outcomes, params, cost, orders),
        }
        figures["calibration"] = calibration(series, outcomes, params)
        figures["ic"] = information_coefficient(series, outcomes, params)
        reports[h] = HorizonReport(horizon=h, outcomes=outcomes, figures=figures)
    return Evaluation(
        bars=int(np.count_nonzero(evaluated)),
        gaps=int(np.count_nonzero(series.gap_flags())),
        missing_bars=series.missing_bars(),
        params=params,
        horizons=reports,
    )
