"""A closed bar's snapshot as JSON: what an alert event stores (`alert_events.snapshot`, the `snapshot` of the event
document the webhook, history and stream carry) and what the engine keeps in Redis as the next close's `previous`.

Shape: the `BarSnapshot` members by name; `events` as objects (`kind`, `direction`, `bottom`, `top`); `fibonacci`
keyed by the ratio as text (`"0.618"`: JSON keys are strings). Missing values are null. Pure: no I/O.
"""

from __future__ import annotations

import math
from typing import Any

from app.alerts.evaluator import BarEvent, BarSnapshot

_NUMBERS = ("score", "confidence", "close", "rsi", "cvd", "delta", "volume", "stop", "target")


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def snapshot_document(snapshot: BarSnapshot) -> dict[str, Any]:
    document: dict[str, Any] = {"close_time": int(snapshot.close_time), "bias": snapshot.bias}
    for name in _NUMBERS:
        document[name] = _number(getattr(snapshot, name))
    document["events"] = [
        {"kind": e.kind, "direction": e.direction, "bottom": float(e.bottom), "top": float(e.top)}
        for e in snapshot.events
    ]
    document["fibonacci"] = {repr(float(ratio)): float(price) for ratio, price in snapshot.fibonacci.items()}
    return document


def snapshot_from_document(document: dict[str, Any]) -> BarSnapshot:
    """The inverse of `snapshot_document` (a round trip gives an equal snapshot)."""
    return BarSnapshot(
        close_time=int(document["close_time"]),
        bias=str(document["bias"]),
        score=float(document["score"] if document["score"] is not None else math.nan),
        confidence=float(document["confidence"] if document["confidence"] is not None else math.nan),
        close=document["close"],
        rsi=document["rsi"],
        cvd=document["cvd"],
        delta=document["delta"],
        volume=document["volume"],
        events=tuple(BarEvent(e["kind"], e["direction"], e["bottom"], e["top"]) for e in document["events"]),
        fibonacci={float(ratio): price for ratio, price in document["fibonacci"].items()},
        stop=document["stop"],
        target=document["target"],
    )
