"""`GET /v1/analysis/{venue}/{symbol}/<module>`: one analytics module on the latest stored bars of a feed, one
operation per module (`cvd`, `orderflow`, `smc`, `fibonacci`, `indicators`).

The module's output is exactly what `POST /v1/analyze` returns for it on the same candles and parameters (the
same engine call and renderer, see `analysis_compute.py`), wrapped like a signal: `venue`, `symbol`,
`timeframe`, `as_of`, `forming`, `bar_count`, the taker-side `inputs`, and the feed's freshness.

Decisions:
- an unknown module (a hidden catch-all route) is a 404 `analysis-module-not-found` listing the five valid
  names, as an unknown venue or symbol is: all three are path segments naming a resource that does not exist;
- each module's parameters are query parameters validated like `params.<module>` of `POST /v1/analyze`; a
  parameter the module does not take is a 422 (see `analysis_params.py`), and each operation documents only
  its module's parameters, with their ranges;
- cached per (feed, timeframe, closed bar, module, canonical parameters) with the signals' single flight;
  `ETag`/`If-None-Match` and `X-Cache` as on `GET /v1/signals`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
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
from app.signals.router import if_none_match_matches
from app.signals.service import feed_freshness, with_feed
from app.trading.markets import SymbolPath, TimeframeQuery, VenuePath


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

# What each operation's summary says the module computes.
SUMMARIES = {
    "cvd": "Cumulative volume delta",
    "orderflow": "Order flow: footprint, imbalances, volume profile, absorption",
    "smc": "Smart-money concepts: swings, structure breaks, fair value gaps, order blocks, liquidity",
    "fibonacci": "Fibonacci retracements and extensions of the latest swing",
    "indicators": "Indicators: SMA, EMA, RSI, ATR, MACD, Bollinger bands, VWAP",
}
assert set(SUMMARIES) == set(MODULES)  # noqa: S101 - import-time guard: one operation per module


def _module_endpoint(module: str) -> Callable[..., Awaitable[Response]]:
    """The handler of `GET /v1/analysis/{venue}/{symbol}/<module>`; the module's own parameters are read from
    the query string (they are documented through `openapi_extra`, not the signature)."""

    async def analysis(
        venue: VenuePath,
        symbol: SymbolPath,
        request: Request,
        service: AnalysisServiceDep,
        settings: SettingsDep,
        timeframe: TimeframeQuery = "1m",
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
            bool,
            Query(description="Per-bar series as in POST /v1/analyze (`last` always holds the last bar's values)"),
        ] = False,
        if_none_match: Annotated[str | None, Header(description="An earlier ETag: 304 if still current")] = None,
    ) -> Response:
        if bars is not None and bars > settings.signal_bars:
            message = f"Input should be less than or equal to {settings.signal_bars}"
            raise RequestValidationError([{"type": "less_than_equal", "loc": ("query", "bars"), "msg": message}])
        params = parse_module_params(module, request.query_params.multi_items())
        query = AnalysisQuery(venue, symbol, module, params, timeframe, bars, include_forming, include_series)
        outcome = await service.resolve(query)
        headers = {
            "etag": outcome.etag, "x-cache": "hit" if outcome.hit else "miss", "cache-control": "private, no-cache"
        }  # fmt: skip
        if if_none_match_matches(if_none_match, outcome.etag):
            return Response(status_code=304, headers=headers)
        feed = await feed_freshness(service.redis, venue, symbol)
        return Response(with_feed(outcome.document, feed), media_type="application/json", headers=headers)

    return analysis


# One operation per module, so each documents exactly the query parameters it accepts (a single operation
# over `{module}` could only document the union, which promises parameters the module then refuses).
for _module in MODULES:
    router.add_api_route(
        f"/analysis/{{venue}}/{{symbol}}/{_module}",
        _module_endpoint(_module),
        methods=["GET"],
        name=f"analysis_{_module}",
        summary=f"{SUMMARIES[_module]} (`{_module}`) on the latest closed bars of a feed",
        description=f"The query parameters after the shared ones are those of `params.{_module}` in "
        "`POST /v1/analyze`, with the same defaults and ranges. Any other parameter, or a value out of its "
        "range, is a 422 whose `errors` names the parameter.",
        dependencies=[require(Scope.SIGNALS_READ)],
        response_class=Response,
        responses={
            200: {
                "description": "The module's output; `X-Cache: hit|miss`, weak `ETag` (send it back in "
                "`If-None-Match`).",
                "model": AnalysisResponse,
                "content": {"application/json": {"examples": {_module: ANALYSIS_EXAMPLES[_module]}}},
            },
            304: {"description": "Not modified: the `If-None-Match` ETag is current."},
            **problem_responses(401, 403, 404, 422, 503),
        },
        openapi_extra={"parameters": openapi_parameters(_module)},
    )


# Registered after the five, so it only sees names that are not a module. Hidden from the document: it has no
# successful response to describe; the policy still requires the scope, so a key without it gets 403, not a
# hint about which module names exist.
@router.get("/analysis/{venue}/{symbol}/{module}", include_in_schema=False, dependencies=[require(Scope.SIGNALS_READ)])
async def unknown_analysis_module(venue: VenuePath, symbol: SymbolPath, module: str) -> Response:
    raise AnalysisModuleNotFound(f"Unknown analysis module {module!r}.", extensions={"valid": list(MODULES)})
