"""Errors of the trading routes.

They may be raised inside an analysis worker process and travel back pickled, so each one reduces to its
constructor arguments (an exception's default pickling keeps only `args`, which would drop `errors`).
"""

from __future__ import annotations

from typing import Any

from app.core.errors import AppError

MAX_REPORTED_ERRORS = 20


class BodyInvalid(Exception):
    """The body does not have the documented shape; the router re-raises it as FastAPI's validation error, so
    it renders exactly like every other route's 422 `validation-failed` problem."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors


class InvalidMarketData(AppError):
    slug = "invalid-market-data"
    title = "Invalid market data"
    status = 422
    description = (
        "The candles or trades are well-formed JSON of the documented shape but break a market-data rule: a "
        "non-finite number, low above min(open, close), high below max(open, close), negative volume, taker-buy "
        "volume outside [0, volume], open times not strictly increasing, trade times going back, an optional "
        "column given for only some candles, or more items than the configured limit. `errors` points at each "
        "offending element (at most 20, in body order)."
    )

    def __init__(self, errors: list[dict[str, Any]], total: int | None = None) -> None:
        count = len(errors) if total is None else total
        shown = "; ".join(f"{error['pointer']}: {error['detail']}" for error in errors[:5])
        super().__init__(
            f"{count} invalid value{'s' if count != 1 else ''} in the market data: {shown}",
            extensions={"errors": errors[:MAX_REPORTED_ERRORS]},
        )
        self.errors = errors
        self.total = total

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors, self.total))


class AnalysisBusy(AppError):
    slug = "analysis-busy"
    title = "Analysis capacity exhausted"
    status = 503
    description = (
        "Every analysis worker is busy and the wait queue is full (DELTAFLOW_ANALYZE_WORKERS, "
        "DELTAFLOW_ANALYZE_MAX_QUEUED); retry after the Retry-After delay."
    )


class MalformedArrow(AppError):
    slug = "malformed-arrow"
    title = "Malformed Arrow stream"
    status = 400
    description = (
        "The request body was sent as `application/vnd.apache.arrow.stream` but is not a readable Arrow IPC "
        "stream (truncated, corrupt, or more than the candle stream and an optional trade stream), or its schema "
        "metadata `options` is not a JSON object."
    )


class UnsupportedMediaType(AppError):
    slug = "unsupported-media-type"
    title = "Unsupported request media type"
    status = 415
    description = (
        "POST /v1/analyze reads `application/json` (rows or columns) and `application/vnd.apache.arrow.stream`; "
        "the request's Content-Type is neither."
    )


class NotAcceptable(AppError):
    slug = "not-acceptable"
    title = "No acceptable response media type"
    status = 406
    description = (
        "POST /v1/analyze answers `application/json` or `application/vnd.apache.arrow.stream`; the request's "
        "Accept header allows neither."
    )
