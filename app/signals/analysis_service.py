"""One analysis module on stored bars: validation, the per-bar cache and the worker pool.

A document is computed once per (feed, timeframe, closed bar, module, canonical parameters): the cache key names
the close time of the newest closed bar, like a signal's, so a new bar invalidates it naturally; the rest of the
key is a digest of the module's complete parameter dataclass (defaults filled in), `bars` and `include_series`,
so `?swing_length=5` and no parameter at all (default 5) share one entry. Distinct parameters are distinct
entries, each bounded by ``signal_cache_ttl_seconds``.

The single flight (in-process task plus Redis lock across instances) is :meth:`SignalService.cached`, the one
signals use; only the stored candle JSON and a small spec go to the analysis worker.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import orjson
from fastapi.exceptions import RequestValidationError

from app.analytics import AnalysisParams
from app.market.aggregation import TIMEFRAMES
from app.market.keys import tag
from app.market.store import read_candles_json
from app.signals.analysis_compute import AnalysisSpec, ParameterTooFine, compute_analysis
from app.signals.compute import SignalInput
from app.signals.service import SignalOutcome, SignalService, etag_of
from app.trading.markets import TimeframeInvalid, check_market_feed, market_unavailable

# Bump when the document's shape or the analytics change: old entries are then simply never read.
CACHE_VERSION = "analysis:v1"


@dataclass(frozen=True, slots=True)
class AnalysisQuery:
    venue: str
    symbol: str
    module: str
    params: AnalysisParams  # validated; only the module's member is read
    timeframe: str = "1m"
    bars: int | None = None  # None: `signal_bars`
    include_forming: bool = False
    include_series: bool = False


def cache_key(spec: AnalysisSpec, last_closed_open: int) -> str:
    rows = spec.rows
    canonical = {
        "bars": rows.bars,
        "include_series": spec.include_series,
        "params": dataclasses.asdict(getattr(spec.params, spec.module)),
    }
    digest = hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]
    close = last_closed_open + rows.interval_ms
    return f"{CACHE_VERSION}:{tag(rows.venue, rows.symbol)}:{rows.timeframe}:{close}:{spec.module}:{digest}"


class AnalysisService:
    def __init__(self, signals: SignalService) -> None:
        self.signals = signals
        self.redis = signals.redis
        self.settings = signals.settings
        self.computed = 0  # documents this instance computed (tests and metrics read it)

    async def resolve(self, query: AnalysisQuery) -> SignalOutcome:
        """The module's document, or a problem: unknown feed (404), timeframe (422), no data (503)."""
        venue, symbol, timeframe = query.venue, query.symbol, query.timeframe
        await check_market_feed(self.redis, self.settings, venue, symbol)
        if timeframe not in TIMEFRAMES:
            raise TimeframeInvalid(f"Unknown timeframe {timeframe!r}.", extensions={"valid": list(TIMEFRAMES)})
        # Read now (not the memo's remembered bar): this path has no BarNotStored fallback to a fresh read.
        last_closed = await self.signals.memo.last_closed_open(venue, symbol, timeframe, fresh=True)
        bars = query.bars or self.settings.signal_bars
        rows = SignalInput(
            venue, symbol, timeframe, TIMEFRAMES[timeframe], last_closed, bars, include_forming=query.include_forming
        )
        spec = AnalysisSpec(rows, query.module, query.params, query.include_series)
        document: bytes | None
        if query.include_forming or last_closed is None:
            # The forming bar changes with every trade: such documents are never cached.
            document, hit = await self._compute(spec), False
        else:
            document, hit = await self.signals.cached(
                cache_key(spec, last_closed), lambda: self._compute(spec), kind="analysis"
            )
        if document is None:
            raise await market_unavailable(self.redis, venue, symbol)
        return SignalOutcome(document, hit, etag_of(document))

    async def _compute(self, spec: AnalysisSpec) -> bytes | None:
        rows = spec.rows
        raw = await read_candles_json(
            self.redis, rows.venue, rows.symbol, rows.timeframe, rows.bars + 1, max_limit=rows.bars + 1
        )
        self.computed += 1
        try:
            return await self.signals.runner.call(compute_analysis, raw, spec)
        except ParameterTooFine as exc:
            error = {"type": "value_error", "loc": ("query", exc.name), "msg": exc.message}
            raise RequestValidationError([error]) from None
