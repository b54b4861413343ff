"""Signal quality study (issue 19): how each component and the combined score rank forward returns, and how a
learned, calibrated model of them does out of sample. Pure numpy, no I/O; ``deltaflow study`` writes the report.
"""

from app.analytics.series.features import WARMUP_BARS
from app.analytics.study.ic import InformationCoefficient, newey_west_t, rank_ic
from app.analytics.study.inputs import StudyInputs, study_inputs
from app.analytics.study.resample import complete_buckets
from app.analytics.study.run import HORIZONS, Trial, component_ics, configurations, deflate, keep, run_trial
from app.analytics.study.scoring import ModelFigures, ReliabilityRow, score_predictions

__all__ = [
    "HORIZONS",
    "WARMUP_BARS",
    "InformationCoefficient",
    "ModelFigures",
    "ReliabilityRow",
    "StudyInputs",
    "Trial",
    "complete_buckets",
    "component_ics",
    "configurations",
    "deflate",
    "keep",
    "newey_west_t",
    "rank_ic",
    "run_trial",
    "score_predictions",
    "study_inputs",
]
