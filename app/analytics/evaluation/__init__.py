"""Signal track record: how a per-bar signal series actually performed on the candles that followed it.

Pure numpy, no I/O. Entry point: :func:`evaluate` over a :class:`SignalSeries`; the rules are written in each
module's docstring (outcomes, metrics, bootstrap, permutation, baselines).
"""

from app.analytics.evaluation.inputs import EvaluationParams, SignalSeries
from app.analytics.evaluation.outcomes import Outcomes, compute_outcomes
from app.analytics.evaluation.report import Evaluation, HorizonReport, evaluate, json_safe

__all__ = [
    "Evaluation",
    "EvaluationParams",
    "HorizonReport",
    "Outcomes",
    "SignalSeries",
    "compute_outcomes",
    "evaluate",
    "json_safe",
]
