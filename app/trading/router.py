"""Trading routes: POST /v1/analyze (bring your own candles and trades)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from starlette.responses import Response

from app.auth.policy import require
from app.auth.scopes import Scope
from app.config import Settings
from app.core.middleware import BODY_LIMITS_STATE
from app.core.schemas import problem_responses
from app.trading import formats
from app.trading.examples import ANALYZE_EXAMPLE
from app.trading.formats import ARROW_STREAM, JSON, ResponseFormat
from app.trading.schemas import AnalyzeRequest, AnalyzeResponse, inline_schema
from app.trading.service import AnalysisRunner, shared_runner

ANALYZE_PATH = "/v1/analyze"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    limits = getattr(app.state, BODY_LIMITS_STATE, None) or {}
    limits[ANALYZE_PATH] = settings.analyze_max_body_bytes
    setattr(app.state, BODY_LIMITS_STATE, limits)
    async with shared_runner(app.state, settings):
        yield


router = APIRouter(tags=["trading"], lifespan=lifespan)


async def get_runner(request: Request) -> AnalysisRunner:
    runner: AnalysisRunner = request.app.state.analysis_runner
    return runner


RunnerDep = Annotated[AnalysisRunner, Depends(get_runner)]


_ARROW_BINARY = {"schema": {"type": "string", "format": "binary", "contentMediaType": ARROW_STREAM}}
# A binary body has no meaningful inline example; this one says where its layout is described.
_ARROW_RESPONSE = {**_ARROW_BINARY, "example": "(Arrow IPC stream bytes: see the operation's description)"}
_FORMATS_DOC = """
Body formats, by Content-Type: `application/json` with `candles` (and `trades`) as an array of objects or as an
object of arrays (`{"t": [...], "o": [...], ...}`; errors then point at `#/candles/<field>/<index>`), or
`application/vnd.apache.arrow.stream`: an Arrow IPC stream of candles (the same column names), optionally
followed by a second stream of trades, with the other members (`interval_ms`, `modules`, `params`,
`include_series`) as a JSON object in the candle schema's metadata under `options`.

Response formats, by Accept: JSON (rows; with `format=columnar` every array of objects becomes an object of
arrays) or `application/vnd.apache.arrow.stream`: one record batch of one row, each table a `list<struct>` column
named by its path (`smc.order_blocks`, per-bar series under `cvd`, `indicators` …) and the rest of the document
as JSON in the schema metadata under `document`.
"""


@router.post(
    ANALYZE_PATH,
    dependencies=[require(Scope.SIGNALS_READ)],
    summary="Analyse your own candles (and trades): every requested module plus the signal",
    description=_FORMATS_DOC,
    response_class=Response,
    responses={
        200: {
            "model": AnalyzeResponse,
            "description": "Module outputs and the signal on the last bar.",
            "content": {"application/json": {"example": ANALYZE_EXAMPLE}, ARROW_STREAM: _ARROW_RESPONSE},
        },
        **problem_responses(400, 406, 413, 415, 422, 503),
    },
    # The body is read raw and validated column-wise (see app/trading/parsing.py); the model documents it.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_schema(AnalyzeRequest)}, ARROW_STREAM: _ARROW_BINARY},
        }
    },
)
async def analyze(
    request: Request,
    runner: RunnerDep,
    format: Annotated[
        Literal["rows", "columnar"],
        Query(description="JSON responses only: event tables as arrays of objects (rows) or objects of arrays."),
    ] = "rows",
) -> Response:
    body_format = formats.body_format(request.headers.get("content-type"))
    response_format = formats.response_format(request.headers.get("accept"), columnar=format == "columnar")
    async with runner.admission():
        body = await request.body()
        content = await runner.run(body, body_format, response_format)
    media_type = ARROW_STREAM if response_format is ResponseFormat.ARROW else JSON
    return Response(content, media_type=media_type, headers={"vary": "accept"})
