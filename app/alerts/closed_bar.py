"""The analysis of one closed bar for alert rules, as a plain function of bytes: what an analysis worker runs.

The window is the signal's (`signal_bars` stored bars ending at the closed bar), so a rule sees at a close exactly
what `GET /v1/signals` said at that close; the previous bar's snapshot is the same window one bar earlier (what
the engine saw at the previous close). It is computed here only when the caller does not hold it already: the
engine keeps the last one per market and timeframe in Redis, so a close normally costs one analysis. Never the
forming bar: only stored closed bars up to the announced one are used. No FastAPI, Redis or settings here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from app.alerts.snapshot import snapshot_at_last_bar
from app.alerts.snapshot_json import snapshot_document
from app.analytics import AnalysisParams, analyze
from app.signals.compute import BarNotStored, candles_from_rows


@dataclass(frozen=True, slots=True)
class ClosedBar:
    venue: str
    symbol: str
    timeframe: str
    interval_ms: int
    open_ms: int  # the closed bar evaluated
    bars: int  # the analysis window
    known_previous_close: int | None  # close time of the previous snapshot the caller holds (None: none)


def _snapshot(rows: list[dict[str, Any]], interval_ms: int) -> dict[str, Any]:
    candles = candles_from_rows(rows, interval_ms)
    return snapshot_document(snapshot_at_last_bar(analyze(candles, params=AnalysisParams()), candles))


def closed_bar_snapshots(raw_candles: bytes, spec: ClosedBar) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
    """(the closed bar's snapshot, the previous bar's or None, whether the caller's known previous snapshot is the
    previous bar's). Both previous members are empty when the bar is the first stored one.

    Raises `BarNotStored` when the announced bar is not among the stored bars read."""
    rows = [r for r in orjson.loads(raw_candles) if r["closed"] and r["t"] <= spec.open_ms]
    if not rows or rows[-1]["t"] != spec.open_ms:
        raise BarNotStored(f"bar {spec.open_ms} of {spec.venue}:{spec.symbol} {spec.timeframe} is not stored")
    current = _snapshot(rows[-spec.bars :], spec.interval_ms)
    if len(rows) < 2:
        return current, None, False
    if rows[-2]["t"] + spec.interval_ms == spec.known_previous_close:
        return current, None, True
    return current, _snapshot(rows[:-1][-spec.bars :], spec.interval_ms), False
