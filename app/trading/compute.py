"""One analysis, start to finish, as a plain function of bytes: what an analysis worker process runs.

Parsing, validation, the analytics and JSON encoding all happen here, off the server's event loop; only the
request body goes in and only the encoded response (or a picklable error) comes out. This module imports no
FastAPI or settings, so a worker process starts with just numpy, orjson, pydantic and the analytics.
"""

from __future__ import annotations

import orjson

from app.analytics import analyze
from app.trading.parsing import Limits, parse_body
from app.trading.render import render


def run_analysis(body: bytes, limits: Limits) -> bytes:
    data = parse_body(body, limits)
    result = analyze(data.candles, data.trades, data.modules, data.params)
    return orjson.dumps(render(result, include_series=data.include_series), option=orjson.OPT_SERIALIZE_NUMPY)


def warm_up() -> None:
    """Run once per worker so its first real request does not pay for lazy imports and first-call setup."""
    run_analysis(b'{"candles": [{"t": 0, "o": 1, "h": 1, "l": 1, "c": 1, "v": 0}], "interval_ms": 60000}',
                 Limits(max_candles=1, max_trades=0))  # fmt: skip
