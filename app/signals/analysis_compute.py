"""One analysis module on stored bars, as a plain function of bytes: what an analysis worker runs for
`GET /v1/analysis/{venue}/{symbol}/{module}`.

The module is run through the same engine call and rendered by the same function as `POST /v1/analyze` with
`modules: [module]`, so the two routes cannot drift apart on the same candles and parameters. Only the stored
candle JSON and a small picklable :class:`AnalysisSpec` cross the process boundary; only the encoded document
comes back. No FastAPI, Redis or settings here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import orjson

from app.analytics import AnalysisParams, analyze
from app.analytics.engine import MODULES
from app.analytics.orderflow import tick_problems
from app.signals.compute import ESTIMATED_SOURCES, SignalInput, candles_from_rows, iso, select_rows
from app.trading.render import render

# Modules whose output depends on the taker side of the volume; the others read prices (and volume) only.
SIDED_MODULES = frozenset({"cvd", "orderflow"})


class ParameterTooFine(ValueError):
    """A query parameter the stored prices make unusable (`orderflow.tick_problems`); the service answers 422."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(name, message)
        self.name, self.message = name, message


@dataclass(frozen=True, slots=True)
class AnalysisSpec:
    rows: SignalInput  # which stored bars to use
    module: str
    params: AnalysisParams  # only the module's own member differs from the defaults
    include_series: bool


def compute_analysis(raw_candles: bytes, spec: AnalysisSpec) -> bytes | None:
    """The encoded document (without `feed`, which changes every request); None if there are no bars."""
    rows, forming = select_rows(orjson.loads(raw_candles), spec.rows)
    if not rows:
        return None
    source = spec.rows
    candles = candles_from_rows(rows, source.interval_ms)
    if spec.module == "orderflow":
        too_fine = tick_problems(candles, None, spec.params.orderflow)
        if too_fine:
            raise ParameterTooFine(*too_fine[0])
    # Only the module is rendered: the signal is not, so the cheap heuristic one is computed, not the model.
    params = replace(spec.params, signal=replace(spec.params.signal, calibrated=False))
    result = analyze(candles, modules=(spec.module,), params=params)
    rendered = render(result, include_series=spec.include_series)[spec.module]
    inputs: dict[str, Any] = {}
    if spec.module in SIDED_MODULES:
        side_source: str = getattr(result, spec.module).side_source
        inputs[spec.module] = {"side_source": side_source, "exact": side_source not in ESTIMATED_SOURCES}
    as_of = result.last_close_time
    body = {
        "venue": source.venue,
        "symbol": source.symbol,
        "timeframe": source.timeframe,
        "module": spec.module,
        "as_of": as_of,
        "as_of_iso": iso(as_of),
        "forming": forming,
        "bar_count": result.bar_count,
        "include_series": spec.include_series,
        "inputs": inputs,
        spec.module: rendered,
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def warm_up() -> None:
    """Run once per worker so its first real request does not pay for lazy imports and first-call setup (each
    module's own code paths and renderer, on one bar: ~ms)."""
    row = {"t": 0, "o": 1.0, "h": 1.0, "l": 1.0, "c": 1.0, "v": 0.0, "buy_v": 0.0, "trades": 0, "closed": True}
    raw = orjson.dumps([row])
    source = SignalInput("sim", "WARMUP", "1m", 60_000, 0, 1, include_forming=False)
    for module in MODULES:
        compute_analysis(raw, AnalysisSpec(source, module, AnalysisParams(), include_series=False))
