"""Body and response formats of POST /v1/analyze, and how a request picks them.

Request body, by `Content-Type`:
- `application/json` (also `+json` types, and no or a form Content-Type, as `curl -d` sends): the JSON body,
  candles and trades each either an array of objects (rows) or an object of arrays (columns, `columnar_in.py`);
- `application/vnd.apache.arrow.stream`: Arrow IPC (`arrow_in.py`);
- anything else: 415 `unsupported-media-type`.

Response, by `Accept` (highest q wins; on a tie the earlier range):
- `application/json`, `application/*`, `*/*` or no Accept: JSON. Event tables (every array of objects) are
  arrays of row objects by default, objects of column arrays with the query parameter `format=columnar`
  (`columns_out.py`);
- `application/vnd.apache.arrow.stream`: Arrow IPC (`arrow_out.py`);
- nothing acceptable: 406 `not-acceptable`.
"""

from __future__ import annotations

from enum import StrEnum

from app.trading.errors import NotAcceptable, UnsupportedMediaType

JSON = "application/json"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
# What `curl -d @body.json` sends unless told otherwise; accepted as JSON, as before the other formats existed.
_FORM = "application/x-www-form-urlencoded"


class BodyFormat(StrEnum):
    JSON = "json"
    ARROW = "arrow"


class ResponseFormat(StrEnum):
    ROWS = "rows"
    COLUMNAR = "columnar"
    ARROW = "arrow"


def body_format(content_type: str | None) -> BodyFormat:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type == ARROW_STREAM:
        return BodyFormat.ARROW
    if media_type in {"", JSON, _FORM} or media_type.endswith("+json"):
        return BodyFormat.JSON
    raise UnsupportedMediaType(f"Content-Type {media_type!r} is not accepted; send {JSON} or {ARROW_STREAM}.")


def _ranges(accept: str) -> list[tuple[float, int, str]]:
    """(q, position, media range) for each range of an Accept header; unparsable q counts as 0."""
    ranges = []
    for position, part in enumerate(accept.split(",")):
        media_range, *parameters = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media_range:
            ranges.append((quality, position, media_range.lower()))
    return ranges


def response_format(accept: str | None, columnar: bool) -> ResponseFormat:
    json_format = ResponseFormat.COLUMNAR if columnar else ResponseFormat.ROWS
    if not accept or not accept.strip():
        return json_format
    offers = {JSON: json_format, ARROW_STREAM: ResponseFormat.ARROW}
    best: tuple[float, int, ResponseFormat] | None = None
    for quality, position, media_range in _ranges(accept):
        if quality <= 0:
            continue
        if media_range in offers:
            chosen = offers[media_range]
        elif media_range in {"*/*", "application/*"}:
            chosen = json_format
        else:
            continue
        if best is None or (quality, -position) > (best[0], -best[1]):
            best = (quality, position, chosen)
    if best is None:
        raise NotAcceptable(f"Accept {accept!r} allows neither {JSON} nor {ARROW_STREAM}.")
    return best[2]
