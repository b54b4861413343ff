"""What the calibrated model said at a signal's bar: the ``model`` block of a signal that used it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.analytics.types import json_float


@dataclass(frozen=True, slots=True)
class ModelVerdict:
    """How the signal's bias and confidence were learned, and what the model expected.

    ``calibration_rows`` is the calibration sample (training rows, each scored out of fold); 0 without a model.
    ``preferred`` is the side with the larger expected return after fees (None without a model);
    ``win_probability`` is the calibrated probability that following it wins after fees over ``horizon_bars``,
    ``expected_return`` its expected return after fees (a fraction of the entry price).
    ``shrinkage_bars_per_outcome``: the calibration's empirical-Bayes shrinkage counts one independent outcome per
    this many bars (None: no shrinkage).
    """

    horizon_bars: int
    window_bars: int
    cost_per_side: float
    l2: float
    calibration_rows: int
    shrinkage_bars_per_outcome: int | None
    preferred: str | None
    win_probability: float | None
    expected_return: float | None
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "ridge logistic regression on the component scores, isotonic calibration out of fold",
            "horizon_bars": self.horizon_bars,
            "window_bars": self.window_bars,
            "fees_round_trip_bp": json_float(2 * self.cost_per_side * 10_000),
            "l2": self.l2,
            "calibration_rows": self.calibration_rows,
            "shrinkage_bars_per_outcome": self.shrinkage_bars_per_outcome,
            "preferred": self.preferred,
            "win_probability": None if self.win_probability is None else json_float(self.win_probability),
            "expected_return": None if self.expected_return is None else json_float(self.expected_return),
            "reasons": list(self.reasons),
        }
