"""The signal's track record on stored bars: the route, its per-bar cache, and the summary every signal carries.

- `GET /v1/signals/{venue}/{symbol}/track-record` evaluates the replayed signal over the stored bars
  (:mod:`app.signals.track_record_compute` says how), cached per (feed, timeframe, closed bar, query) with the
  signals' single flight, in the shared analysis worker pool.
- Every signal document carries `track_record`: the summary of the default record (all stored bars, the default
  horizons and costs) at `DELTAFLOW_TRACK_RECORD_SUMMARY_HORIZON`. It is read from Redis when the signal is
  computed, never computed on the signal's path (a replay of 5 000 bars takes a good part of a second): when the
  stored summary is older than the signal's bar, a refresh is started in the background and this signal carries
  the previous one, whose `as_of` says which bar it is of. So the summary trails the signal by at most a bar.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from redis.exceptions import RedisError

from app.analytics import AnalysisParams
from app.analytics.evaluation import EvaluationParams
from app.auth.policy import require
from app.auth.scopes import Scope
from app.config import Settings
from app.core.logging import get_logger
from app.core.schemas import problem_responses
from app.market.aggregation import TIMEFRAMES
from app.market.keys import tag
from app.market.store import read_candles_json
from app.signals import replay_memory
from app.signals.compute import SignalInput
from app.signals.router import if_none_match_matches
from app.signals.service import SignalOutcome, SignalService, etag_of, feed_freshness, with_feed
from app.signals.track_record_compute import TrackRecordSpec, compute_track_record
from app.trading.markets import (
    SymbolPath,
    TimeframeInvalid,
    TimeframeQuery,
    VenuePath,
    check_market_feed,
    market_unavailable,
)

log = get_logger(__name__)

# Bump when the document's shape or the analytics change: old entries are then simply never read.
CACHE_VERSION = "track-record:v1"

# KEYS: the summary hash. ARGV: as_of, summary JSON. Keeps the newest summary when instances race.
_KEEP_NEWEST = """
local stored = tonumber(redis.call('HGET', KEYS[1], 'as_of') or '-1')
if tonumber(ARGV[1]) <= stored then return 0 end
redis.call('HSET', KEYS[1], 'as_of', ARGV[1], 'summary', ARGV[2])
return 1
"""


def _summary_key(venue: str, symbol: str, timeframe: str) -> str:
    return f"{CACHE_VERSION}:{tag(venue, symbol)}:{timeframe}:summary"


def evaluation_params(settings: Settings, horizon: int | None = None) -> EvaluationParams:
    horizons = (horizon,) if horizon is not None else tuple(sorted(set(settings.track_record_horizons)))
    return EvaluationParams(
        horizons=horizons,
        fee_bps=settings.track_record_fee_bps,
        slippage_bps=settings.track_record_slippage_bps,
        permutations=settings.track_record_permutations,
    )


class TrackRecordService:
    def __init__(self, signals: SignalService) -> None:
        self.signals = signals
        self.redis = signals.redis
        self.settings = signals.settings
        self._keep_newest = self.redis.register_script(_KEEP_NEWEST)
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    async def resolve(
        self,
        venue: str,
        symbol: str,
        timeframe: str,
        *,
        horizon: int | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> SignalOutcome:
        await check_market_feed(self.redis, self.settings, venue, symbol)
        if timeframe not in TIMEFRAMES:
            raise TimeframeInvalid(f"Unknown timeframe {timeframe!r}.", extensions={"valid": list(TIMEFRAMES)})
        last_closed = await self.signals.memo.last_closed_open(venue, symbol, timeframe, fresh=True)
        if last_closed is None:
            raise await market_unavailable(self.redis, venue, symbol)
        spec = TrackRecordSpec(
            SignalInput(
                venue, symbol, timeframe, TIMEFRAMES[timeframe], last_closed, self.settings.track_record_bars,
                include_forming=False,
            ),
            evaluation_params(self.settings, horizon),
            self.settings.track_record_summary_horizon,
            since_ms,
            until_ms,
        )  # fmt: skip
        document, hit = await self.signals.cached(self._key(spec), lambda: self._compute(spec), kind="track_record")
        if document is None:
            raise await market_unavailable(self.redis, venue, symbol)
        if horizon is None and since_ms is None and until_ms is None:
            await self._keep_summary(spec, document)
        return SignalOutcome(document, hit, etag_of(document))

    def _key(self, spec: TrackRecordSpec) -> str:
        rows = spec.rows
        evaluation = spec.evaluation
        canonical = [
            evaluation.horizons, evaluation.fee_bps, evaluation.slippage_bps, evaluation.permutations,
            spec.summary_horizon, rows.bars, spec.since_ms, spec.until_ms,
        ]  # fmt: skip
        digest = hashlib.sha256(orjson.dumps(canonical)).hexdigest()[:24]
        assert rows.last_closed_open is not None  # noqa: S101 - resolve() returned early without a closed bar
        close = rows.last_closed_open + rows.interval_ms
        return f"{CACHE_VERSION}:{tag(rows.venue, rows.symbol)}:{rows.timeframe}:{close}:{digest}"

    async def _compute(self, spec: TrackRecordSpec) -> bytes | None:
        rows = spec.rows
        raw = await read_candles_json(
            self.redis, rows.venue, rows.symbol, rows.timeframe, rows.bars + 1, max_limit=rows.bars + 1
        )
        # The replay's memory (replay_memory): without it, the replay refits the model at every stored bar.
        key = replay_memory.memory_key(rows.venue, rows.symbol, rows.timeframe, AnalysisParams())
        memory = None
        with suppress(RedisError, OSError):
            memory = await self.redis.get(key)
        document, remembered = await self.signals.runner.call(compute_track_record, raw, spec, memory)
        if remembered is not None:
            with suppress(RedisError, OSError):
                await self.redis.set(key, remembered, ex=self.settings.track_record_memory_ttl_s)
        return document

    async def _keep_summary(self, spec: TrackRecordSpec, document: bytes) -> None:
        body = orjson.loads(document)
        summary = body.get("summary")
        if summary is None:
            return
        key = _summary_key(spec.rows.venue, spec.rows.symbol, spec.rows.timeframe)
        with suppress(RedisError, OSError):
            await self._keep_newest(keys=[key], args=[body["as_of"], orjson.dumps(summary)])

    async def summary(self, spec: SignalInput) -> bytes:
        """The stored summary for a signal's feed and timeframe (JSON `null` when none yet); refreshed in the
        background when older than the signal's bar."""
        key = _summary_key(spec.venue, spec.symbol, spec.timeframe)
        try:
            stored = await self.redis.hmget(key, ["as_of", "summary"])
        except (RedisError, OSError):
            return b"null"
        as_of, summary = stored
        if spec.last_closed_open is not None:
            close = spec.last_closed_open + spec.interval_ms
            if as_of is None or int(as_of) < close:
                self._refresh_soon(spec.venue, spec.symbol, spec.timeframe)
        return summary if isinstance(summary, bytes) else b"null"

    def _refresh_soon(self, venue: str, symbol: str, timeframe: str) -> None:
        name = f"{venue}:{symbol}:{timeframe}"
        if name in self._refreshing:
            return

        async def refresh() -> None:
            try:
                await self.resolve(venue, symbol, timeframe)
            except Exception as exc:
                log.warning("track_record.refresh_failed", feed=name, error=type(exc).__name__)

        task = asyncio.create_task(refresh(), name=f"track-record-refresh:{name}")
        self._refreshing[name] = task
        task.add_done_callback(lambda _: self._refreshing.pop(name, None))

    async def aclose(self) -> None:
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Runs after the signals router's lifespan, whose service owns the cache, the single flight and the workers.
    service = TrackRecordService(app.state.signal_service)
    app.state.track_record_service = service
    app.state.signal_service.track_record_summary = service.summary
    try:
        yield
    finally:
        app.state.signal_service.track_record_summary = None
        await service.aclose()


router = APIRouter(prefix="/v1", tags=["signals"], lifespan=lifespan)


async def get_track_record_service(request: Request) -> TrackRecordService:
    service: TrackRecordService = request.app.state.track_record_service
    return service


def _epoch_ms(value: datetime | None, name: str) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        message = "must carry a time zone (e.g. 2026-11-01T00:00:00Z)"
        raise RequestValidationError([{"type": "timezone_aware", "loc": ("query", name), "msg": message}])
    return int(value.timestamp() * 1000)


@router.get(
    "/signals/{venue}/{symbol}/track-record",
    summary="How the signal did: its causal replay over the stored bars, after costs, against baselines",
    description="The signal at every stored closed bar (computed from the bars up to that bar only), followed "
    "from the next bar's open for each horizon: hit rate, mean and median return, profit factor, expectancy "
    "in R with bootstrap intervals, Sharpe and drawdown of non-overlapping trades, the information coefficient, "
    "a calibration table, and the `always_long` and `random` baselines (p-value over seeded permutations). No "
    "figure below 30 decided signals (`insufficient`). Past and hypothetical, after the configured costs.",
    dependencies=[require(Scope.SIGNALS_READ)],
    response_class=Response,
    responses={
        200: {"description": "The track record; `X-Cache: hit|miss`, weak `ETag`."},
        304: {"description": "Not modified: the `If-None-Match` ETag is current."},
        **problem_responses(401, 403, 404, 422, 503),
    },
)
async def get_track_record(
    venue: VenuePath,
    symbol: SymbolPath,
    service: Annotated[TrackRecordService, Depends(get_track_record_service)],
    timeframe: TimeframeQuery = "1m",
    horizon: Annotated[
        int | None, Query(ge=1, le=1000, description="Only this horizon (bars); default: every configured one")
    ] = None,
    since: Annotated[
        datetime | None, Query(alias="from", description="Evaluate signals of bars closing at or after (ISO 8601)")
    ] = None,
    until: Annotated[
        datetime | None, Query(alias="to", description="… and at or before (ISO 8601); outcomes may run past it")
    ] = None,
    if_none_match: Annotated[str | None, Header(description="An earlier ETag: 304 if still current")] = None,
) -> Response:
    since_ms, until_ms = _epoch_ms(since, "from"), _epoch_ms(until, "to")
    if since_ms is not None and until_ms is not None and until_ms < since_ms:
        message = "must not be before from"
        raise RequestValidationError([{"type": "value_error", "loc": ("query", "to"), "msg": message}])
    outcome = await service.resolve(venue, symbol, timeframe, horizon=horizon, since_ms=since_ms, until_ms=until_ms)
    headers = {"etag": outcome.etag, "x-cache": "hit" if outcome.hit else "miss", "cache-control": "private, no-cache"}
    if if_none_match_matches(if_none_match, outcome.etag):
        return Response(status_code=304, headers=headers)
    feed = await feed_freshness(service.redis, venue, symbol)
    return Response(with_feed(outcome.document, feed), media_type="application/json", headers=headers)
