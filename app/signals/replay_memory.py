"""What a feed's track-record replay remembers between runs: the calibrated model's prediction at every bar.

The calibrated signal refits its model at every bar (~1 ms a fit), so replaying the 5 000 stored bars of a feed from
scratch costs ~6 s of CPU, and the record is recomputed at every bar close. A prediction never changes once its bar
has closed (the model at bar ``t`` learns from bars up to ``t`` only), so each replay stores its predictions, keyed
by bar open time, and the next one fits only the bars it has not seen (``app.analytics.model.replay``): one fit per
new bar.

Decisions:
- The memory is one Redis string per feed, timeframe and analysis parameters (their fingerprint is in the key, with
  a version to bump when the analytics change), holding a packed numpy record array: 34 bytes a bar, ~170 kB for
  5 000 bars. It expires after ``DELTAFLOW_TRACK_RECORD_MEMORY_TTL_S`` without a replay, and keeps the newest
  ``DELTAFLOW_TRACK_RECORD_BARS`` bars.
- A remembered prediction is what the replay said when that bar was first reached. While the store still holds every
  bar since the first replay, that is exactly what a replay from scratch says (the features of bar ``t`` depend on
  bars up to ``t`` only; tested). Once the store's retention starts dropping the oldest bars, a replay from scratch
  would start later and could differ where a component still remembers a dropped bar (a long-lived structure
  break); the remembered one is then the point-in-time record, never revised.
- A blob that does not decode (another version, truncated) is ignored: the replay starts from scratch.
"""

from __future__ import annotations

import hashlib

import numpy as np

from app.analytics import AnalysisParams
from app.analytics.model import KnownPredictions, Predictions
from app.analytics.types import IntArray
from app.market.keys import tag

VERSION = "replay-memory:v1"

RECORD = np.dtype(
    [
        ("open_time", "<i8"),
        ("preferred", "i1"),
        ("side", "i1"),
        ("probability", "<f8"),
        ("expected_return", "<f8"),
        ("score", "<f8"),
    ]
)


def memory_key(venue: str, symbol: str, timeframe: str, params: AnalysisParams) -> str:
    # The dataclasses' repr lists every field with its value: a changed default or model parameter is a new key.
    fingerprint = hashlib.sha256(repr(params).encode()).hexdigest()[:16]
    return f"{VERSION}:{tag(venue, symbol)}:{timeframe}:{fingerprint}"


def encode(open_time: IntArray, predictions: Predictions, keep: int) -> bytes:
    """The newest ``keep`` bars' predictions, packed."""
    rows = slice(max(0, open_time.shape[0] - keep), None)
    packed = np.empty(open_time[rows].shape[0], dtype=RECORD)
    packed["open_time"] = open_time[rows]
    kept = predictions.take(rows)
    packed["preferred"], packed["side"] = kept.preferred, kept.side
    packed["probability"], packed["expected_return"], packed["score"] = (
        kept.probability,
        kept.expected_return,
        kept.score,
    )
    return packed.tobytes()


def decode(blob: bytes | None) -> KnownPredictions | None:
    """The remembered predictions, or None when there are none or the blob is not one this version wrote."""
    if not blob or len(blob) % RECORD.itemsize:
        return None
    packed = np.frombuffer(blob, dtype=RECORD)
    try:
        return KnownPredictions(
            open_time=packed["open_time"].copy(),
            predictions=Predictions(
                packed["preferred"].copy(),
                packed["side"].copy(),
                packed["probability"].copy(),
                packed["expected_return"].copy(),
                packed["score"].copy(),
            ),
        )
    except ValueError:  # open times out of order: not a blob this module wrote
        return None
