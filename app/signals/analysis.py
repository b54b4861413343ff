"""`GET /v1/analysis/{venue}/{symbol}/{module}`: one analytics module on the latest stored bars of a feed.

The module's output is exactly what `POST /v1/analyze` returns for it on the same candles and parameters (the
same engine call and renderer, see `analysis_compute.py`), wrapped like a signal: `venue`, `symbol`,
`timeframe`, `as_of`, `forming`, `bar_count`, the taker-side `inputs`, and the feed's freshness.

Decisions:
- an unknown `module` is a 404 `analysis-module-not-found` listing the five valid names, as an unknown venue or
  symbol is: all three are path segments naming a resource that does not exist;
- each module's parameters are query parameters validated like `params.<module>` of `POST /v1/analyze`; a
  parameter the module does not take is a 422 (see `analysis_params.py`);
- cached per (feed, timeframe, closed bar, module, canonical parameters) with the signals' single flight;
  `ETag`/`If-None-Match` and `X-Cache` as on `GET /v1/signals`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from app.analytics.engine import MODULES
from app.auth.policy import require
from app.auth.scopes import Scope
from app.core.deps import SettingsDep
from app.core.errors import AppError
from app.core.schemas import problem_responses
from app.signals.analysis_params import module_params as parse_module_params
from app.signals.analysis_params import openapi_parameters
from app.signals.analysis_schemas import ANALYSIS_EXAMPLES, AnalysisResponse
from app.signals.analysis_service import AnalysisQuery, AnalysisService
from app.signals.router import _matches
from app.signals.service import feed_freshness, with_feed
from app.trading.markets import SymbolPath, VenuePath


class AnalysisModuleNotFound(AppError):
    slug = "analysis-module-not-found"
    title = "Unknown analysis module"
    status = 404
    description = "The module is not one of the analytics modules; `valid` lists them."


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Runs after the signals router's lifespan, whose service owns the cache and the single flight.
    app.state.analysis_service = AnalysisService(app.state.signal_service)
    yield


router = APIRouter(prefix="/v1", tags=["signals"], lifespan=lifespan)


async def get_analysis_service(request: Request) -> AnalysisService:
    service: AnalysisService = request.app.state.analysis_service
    return service


AnalysisServiceDep = Annotated[AnalysisService, Depends(get_analysis_service)]
ModulePath = Annotated[
    str, Path(description="The analytics module", examples=["smc"], json_schema_extra={"enum": list(MODULES)})
]


@router.get(
    "/analysis/{venue}/{symbol}/{module}",
    summary="One analytics module (cvd, orderflow, smc, fibonacci, indicators) on the latest closed bars of a feed",
    description="The module's parameters are query parameters (those of `params.<module>` in `POST /v1/analyze`, "
    "same defaults and ranges); each is listed below with the modules that take it. A parameter the module does "
    "not take is a 422, as is a value out of its range (the problem's `errors` names the parameter). An unknown "
    "module is a 404 listing the valid ones.",
    dependencies=[require(Scope.SIGNALS_READ)],
    response_class=Response,
    responses={
        200: {
            "description": "The module's output; `X-Cache: hit|miss`, weak `ETag` (send it back in `If-None-Match`).",
            "model": AnalysisResponse,
            "content": {"application/json": {"examples": ANALYSIS_EXAMPLES}},
        },
        304: {"description": "Not modified: the `If-None-Match` ETag is current."},
        **problem_responses(401, 403, 404, 422, 503),
    },
    openapi_extra={"parameters": openapi_parameters()},
)
async def analysis(
    venue: VenuePath,
    symbol: SymbolPath,
    module: ModulePath,
    request: Request,
    service: AnalysisServiceDep,
    settings: SettingsDep,
    timeframe: Annotated[str, Query(description="1m, 5m, 15m, 1h, 4h or 1d", examples=["5m"])] = "1m",
    bars: Annotated[
        int | None,
        Query(
            ge=1,
            description="How many of the newest bars to analyse (the forming bar counts when included); "
            "at most and by default DELTAFLOW_SIGNAL_BARS (1000 unless configured)",
        ),
    ] = None,
    include_forming: Annotated[bool, Query(description="Also include the forming bar (flagged)")] = False,
    include_series: Annotated[
        bool, Query(description="Per-bar series as in POST /v1/analyze (`last` always holds the last bar's values)")
    ] = False,
    if_none_match: Annotated[str | None, Header(description="An earlier ETag: 304 if still current")] = None,
) -> Response:
    if module not in MODULES:
        raise AnalysisModuleNotFound(f"Unknown analysis module {module!r}.", extensions={"valid": list(MODULES)})
    if bars is not None and bars > settings.signal_bars:
        message = f"Input should be less than or equal to {settings.signal_bars}"
        raise RequestValidationError([{"type": "less_than_equal", "loc": ("query", "bars"), "msg": message}])
    params = parse_module_params(module, request.query_params.multi_items())
    query = AnalysisQuery(venue, symbol, module, params, timeframe, bars, include_forming, include_series)
    outcome = await service.resolve(query)
    headers = {"etag": outcome.etag, "x-cache": "hit" if outcome.hit else "miss", "cache-control": "private, no-cache"}
    if _matches(if_none_match, outcome.etag):
        return Response(status_code=304, headers=headers)
    feed = await feed_freshness(service.redis, venue, symbol)
    return Response(with_feed(outcome.document, feed), media_type="application/json", headers=headers)
