"""One analysis, start to finish, as a plain function of bytes: what an analysis worker process runs.

Parsing, validation, the analytics and encoding all happen here, off the server's event loop; only the
request body goes in and only the encoded response (or a picklable error) comes out. This module imports no
FastAPI or settings, so a worker process starts with just numpy, orjson, pyarrow, pydantic and the analytics.
The body and response formats (`app/trading/formats/`) are chosen by the router from the request's headers.
"""

from __future__ import annotations

import orjson

from app.analytics import analyze
from app.trading.evaluation import evaluation_document
from app.trading.formats import BodyFormat, ResponseFormat, arrow_out, columns_out
from app.trading.formats.arrow_in import parse_arrow
from app.trading.parsing import Limits, parse_body
from app.trading.render import render


def run_analysis(
    body: bytes,
    limits: Limits,
    body_format: BodyFormat = BodyFormat.JSON,
    response_format: ResponseFormat = ResponseFormat.ROWS,
) -> bytes:
    data = parse_arrow(body, limits) if body_format is BodyFormat.ARROW else parse_body(body, limits)
    result = analyze(data.candles, data.trades, data.modules, data.params)
    evaluation = None
    if data.evaluate is not None:
        evaluation = evaluation_document(
            data.candles, data.evaluate, params=data.params, modules=data.modules, include_series=data.include_series
        )
    if response_format is ResponseFormat.ROWS:
        document = render(result, include_series=data.include_series)
        if evaluation is not None:
            document["evaluation"] = evaluation
        return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    arrow = response_format is ResponseFormat.ARROW
    columnar = columns_out.columnar_document(result, include_series=data.include_series, for_arrow=arrow)
    if evaluation is not None:
        columnar["evaluation"] = evaluation
    return arrow_out.encode(columnar) if arrow else columns_out.encode(columnar)


def warm_up() -> None:
    """Run once per worker so its first real request does not pay for lazy imports and first-call setup."""
    body = b'{"candles": [{"t": 0, "o": 1, "h": 1, "l": 1, "c": 1, "v": 0}], "interval_ms": 60000}'
    for response_format in ResponseFormat:
        run_analysis(body, Limits(max_candles=1, max_trades=0), BodyFormat.JSON, response_format)
