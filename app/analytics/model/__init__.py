"""A learned, calibrated and abstaining model of the signal's components, pure numpy (see ``calibrated``).

``fit_window`` learns from one window of bars what a signal may learn at its last close; ``walk_forward`` replays
that at every bar of a series (``replay``: reusing the predictions an earlier replay made); ``deflated_sharpe``
deflates the Sharpe ratio of the configuration kept.
"""

from app.analytics.model.calibrated import FittedModel, ModelParams, Predictions, fit_rows, fit_window
from app.analytics.model.selection import DeflatedSharpe, deflated_sharpe
from app.analytics.model.walkforward import KnownPredictions, replay, walk_forward

__all__ = [
    "DeflatedSharpe",
    "FittedModel",
    "KnownPredictions",
    "ModelParams",
    "Predictions",
    "deflated_sharpe",
    "fit_rows",
    "fit_window",
    "replay",
    "walk_forward",
]
