"""`POST /v1/analyze` with `evaluate`: the signal's track record over the request's own candles.

The same engine call as the stored-data track record (:func:`app.analytics.track_record.track_record`): the signal
at every bar is ``analyze`` on the candles up to that bar, followed from the next bar's open. Output member
`evaluation` = the engine's figures with `by_horizon["<h>"]`, and with `include_series` a `series` table (one row
per bar: open time, bias, score, forward return per horizon; null where not yet known).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.analytics import AnalysisParams, Candles
from app.analytics.evaluation import EvaluationParams, json_safe
from app.analytics.evaluation.outcomes import Outcomes
from app.analytics.track_record import track_record


def evaluation_document(
    candles: Candles,
    evaluation: EvaluationParams,
    *,
    params: AnalysisParams,
    modules: tuple[str, ...] | None,
    include_series: bool,
) -> dict[str, Any]:
    record = track_record(candles, evaluation, params=params, modules=modules)
    document = record.evaluation.to_dict()
    document["by_horizon"] = document.pop("horizons")
    if include_series:
        # Plain lists (NaN → null): a table of columns the Arrow response carries as one, like the modules' series.
        series: dict[str, Any] = {
            "open_time": candles.open_time.tolist(),
            "bias": record.signals.bias.astype(np.int64).tolist(),
            "score": record.signals.score.tolist(),
        }
        for horizon, report in record.evaluation.horizons.items():
            outcomes: Outcomes = report.outcomes
            series[f"forward_return_{horizon}"] = json_safe(outcomes.forward_return.tolist())
        document["series"] = series
    return document
