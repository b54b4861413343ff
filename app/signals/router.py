"""Signal routes: one signal (`GET /v1/signals/{venue}/{symbol}`) and many (`POST /v1/signals/batch`).

Both go through :class:`SignalService` (cache per closed bar, single flight, worker pool). Bodies are spliced
from the cached bytes rather than re-encoded; the feed's freshness is added per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from app.auth.metering import charge_extra
from app.auth.policy import require
from app.auth.scopes import Scope
from app.core.deps import SettingsDep
from app.core.errors import PROBLEM_TYPES, VALIDATION_PROBLEM, AppError, problem_body, request_id_of, validation_errors
from app.core.fast_lane import fast_lane
from app.core.schemas import problem_responses
from app.market.aggregation import TIMEFRAMES
from app.signals.schemas import (
    BATCH_EXAMPLE,
    SIGNAL_EXAMPLE,
    BatchItem,
    BatchRequest,
    BatchResponse,
    SignalResponse,
)
from app.signals.service import SignalOutcome, SignalQuery, SignalService, with_feed
from app.trading.service import shared_runner


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Runs after the app's lifespan (Redis); the worker pool is shared with POST /v1/analyze.
    async with shared_runner(app.state, app.state.settings) as runner:
        service = SignalService(app.state.redis, app.state.settings, runner)
        service.memo.start()
        app.state.signal_service = service
        try:
            yield
        finally:
            await service.aclose()


router = APIRouter(prefix="/v1", tags=["signals"], lifespan=lifespan)


async def get_signal_service(request: Request) -> SignalService:
    service: SignalService = request.app.state.signal_service
    return service


SignalServiceDep = Annotated[SignalService, Depends(get_signal_service)]
_ITEM = TypeAdapter(BatchItem)


def sizing(account_equity: float | None, risk_pct: float | None, where: str = "query") -> None:
    """Position sizing needs both numbers; one alone is a 422 naming the missing one."""
    if (account_equity is None) != (risk_pct is None):
        missing = "risk_pct" if risk_pct is None else "account_equity"
        message = "account_equity and risk_pct must be given together"
        loc = (where, missing) if where == "query" else ("body", missing)
        raise RequestValidationError([{"type": "missing", "loc": loc, "msg": message, "input": None}])


def if_none_match_matches(if_none_match: str | None, tag: str) -> bool:
    if not if_none_match:
        return False
    opaque = tag.removeprefix("W/")
    candidates = [c.strip() for c in if_none_match.split(",")]
    return any(c == "*" or c.removeprefix("W/") == opaque for c in candidates)


class SignalParams(BaseModel):
    """The query of `GET /v1/signals/{venue}/{symbol}`, validated in one step.

    The hottest read of the API: letting FastAPI solve four query parameters, a header and a service dependency
    one by one cost about as much as the rest of a cached request, so the route reads them from the request
    itself (errors are the same 422 problems, each naming its parameter) and documents them from this model."""

    model_config = ConfigDict(extra="ignore")  # like FastAPI, parameters the route does not take are ignored

    timeframe: str = Field(
        default="1m", description="1m, 5m, 15m, 1h, 4h or 1d", json_schema_extra={"enum": list(TIMEFRAMES)}
    )
    include_forming: bool = Field(default=False, description="Also evaluate the forming bar (flagged)")
    account_equity: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="For sizing")
    risk_pct: float | None = Field(default=None, gt=0, le=100, description="Percent of equity risked")

    @classmethod
    def of(cls, request: Request) -> SignalParams:
        try:
            return cls.model_validate(request.query_params)
        except ValidationError as error:
            raise RequestValidationError(
                [{**e, "loc": ("query", *e["loc"])} for e in error.errors(include_url=False)]
            ) from None


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI query parameters from a model's JSON schema (a null alternative dropped: omit the parameter)."""
    schema = model.model_json_schema()
    parameters = []
    for name, declared in schema["properties"].items():
        field = {k: v for k, v in declared.items() if k != "title"}
        options = field.pop("anyOf", None)
        if options is not None:
            field.update(next(option for option in options if option.get("type") != "null"))
        description = field.pop("description", "")
        parameters.append({"name": name, "in": "query", "required": False, "description": description, "schema": field})
    return parameters


# The path parameters, documented as FastAPI documents VenuePath / SymbolPath (the hot route reads them itself).
FEED_PATH_PARAMETERS = [
    {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "examples": [example]},
    }
    for name, description, example in (
        ("venue", "Venue id", "binance"),
        ("symbol", "Symbol as the exchange spells it", "BTCUSDT"),
    )
]

IF_NONE_MATCH = {
    "name": "if-none-match",
    "in": "header",
    "required": False,
    "description": "An earlier ETag: 304 if still current",
    "schema": {"type": "string"},
}


@router.get(
    "/signals/{venue}/{symbol}",
    summary="The signal on the latest closed bars of an ingested feed",
    dependencies=[require(Scope.SIGNALS_READ)],
    response_class=Response,
    responses={
        200: {
            "description": "The signal; `X-Cache: hit|miss`, weak `ETag` (send it back in `If-None-Match`).",
            "model": SignalResponse,
            "content": {"application/json": {"example": SIGNAL_EXAMPLE}},
        },
        304: {"description": "Not modified: the `If-None-Match` ETag is current."},
        **problem_responses(401, 403, 404, 422, 503),
    },
    openapi_extra={"parameters": [*FEED_PATH_PARAMETERS, *query_parameters(SignalParams), IF_NONE_MATCH]},
)
@fast_lane
async def signal(request: Request) -> Response:
    # Path and query read here rather than declared as parameters: FastAPI's solving of each declared parameter
    # cost ~18 µs of the ~140 µs a cached signal takes in-process (measured), on the API's hottest route; and
    # served as a fast lane (app.core.fast_lane), without FastAPI's per-request machinery.
    venue, symbol = request.path_params["venue"], request.path_params["symbol"]
    params = SignalParams.of(request)
    sizing(params.account_equity, params.risk_pct)
    service: SignalService = request.app.state.signal_service
    query = SignalQuery(venue, symbol, params.timeframe, params.include_forming, params.account_equity, params.risk_pct)
    outcome = await service.resolve(query)
    headers = {"etag": outcome.etag, "x-cache": "hit" if outcome.hit else "miss", "cache-control": "private, no-cache"}
    if if_none_match_matches(request.headers.get("if-none-match"), outcome.etag):
        return Response(status_code=304, headers=headers)
    feed = await service.freshness(venue, symbol)
    return Response(with_feed(outcome.document, feed), media_type="application/json", headers=headers)


@router.post(
    "/signals/batch",
    summary="Up to 50 signals in one request; each item gets its signal or its own problem",
    dependencies=[require(Scope.SIGNALS_READ)],
    response_class=Response,
    responses={
        200: {
            "description": "One result per item, in request order: `status` 200 with `signal`, or the item's "
            "`problem` (RFC 9457). One bad item never fails the batch.",
            "model": BatchResponse,
            "content": {"application/json": {"example": BATCH_EXAMPLE}},
        },
        **problem_responses(400, 401, 403, 413, 422, 429),
    },
)
async def batch(body: BatchRequest, request: Request, service: SignalServiceDep, settings: SettingsDep) -> Response:
    limit = settings.signal_batch_max_items
    if len(body.items) > limit:
        raise RequestValidationError(
            [{"type": "too_long", "loc": ("body", "items"), "msg": f"at most {limit} items", "input": None}]
        )
    sizing(body.account_equity, body.risk_pct, where="body")
    await charge_extra(request.scope, len(body.items) - 1)  # each item costs a request's token
    gate = asyncio.Semaphore(settings.signal_batch_concurrency)
    base = f"{request.url.path}#/items/"
    request_id = request_id_of(request.scope)

    async def one(index: int, raw: BatchItem | dict[str, Any]) -> bytes:
        async with gate:
            return await _batch_result(service, raw, body, f"{base}{index}", request_id)

    results = await asyncio.gather(*(one(i, raw) for i, raw in enumerate(body.items)))
    errors = sum(1 for r in results if not r.startswith(b'{"status":200'))
    content = b'{"results":[' + b",".join(results) + b'],"count":%d,"errors":%d}' % (len(results), errors)
    return Response(content, media_type="application/json")


async def _batch_result(
    service: SignalService, raw: BatchItem | dict[str, Any], body: BatchRequest, instance: str, request_id: str | None
) -> bytes:
    try:
        item = raw if isinstance(raw, BatchItem) else _ITEM.validate_python(raw)
    except ValidationError as error:
        rendered = validation_errors([{**e, "loc": ("body", *e["loc"])} for e in error.errors()])
        problem = problem_body(
            problem=VALIDATION_PROBLEM, detail="This item is invalid.", instance=instance,
            request_id=request_id, extensions={"errors": rendered},
        )  # fmt: skip
        return b'{"status":422,"problem":' + problem + b"}"
    query = SignalQuery(
        item.venue, item.symbol, item.timeframe, item.include_forming, body.account_equity, body.risk_pct
    )
    try:
        outcome: SignalOutcome = await service.resolve(query)
    except AppError as error:
        problem = problem_body(
            problem=PROBLEM_TYPES[error.slug], detail=error.detail, instance=instance,
            request_id=request_id, extensions=error.extensions,
        )  # fmt: skip
        return b'{"status":%d,"problem":%s}' % (error.status, problem)
    feed = await service.freshness(item.venue, item.symbol)
    cache = b"hit" if outcome.hit else b"miss"
    signal = with_feed(outcome.document, feed)
    return b'{"status":200,"cache":"%s","etag":%s,"signal":%s}' % (cache, orjson.dumps(outcome.etag), signal)
