"""Bars from Binance REST klines (``/api/v3/klines`` spot, ``/fapi/v1/klines`` USDⓈ-M futures).

Klines carry the taker-buy base volume, so a backfilled bar has an exact buy/sell split and delta (not an
estimate from OHLCV). Each timeframe is fetched at its own interval (``1m`` … ``1d``): the venue's own bars are
exact where a rollup of 1 m klines would need up to 1 440 rows per day. Klines have no footprint and no
liquidations; backfilled bars are stored without them.

Requests go through the venue's :class:`CircuitBreaker` (shared with the depth snapshots): a 429/418 opens it and
no request is made while it is open. The venue's server time (``/api/v3/time``, ``/fapi/v1/time``) is asked the
same way: a kline row is closed or still forming by the venue's clock (:mod:`app.market.venue_clock`), not ours.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar
from urllib.parse import urlencode

import httpx
import orjson

from app.market.aggregation import TIMEFRAMES, Bar
from app.market.recovery import CircuitBreaker, parse_retry_after
from app.market.venues.binance import Market

_T = TypeVar("_T")
KLINES_PATH: Final[dict[Market, str]] = {"spot": "/api/v3/klines", "futures": "/fapi/v1/klines"}
TIME_PATH: Final[dict[Market, str]] = {"spot": "/api/v3/time", "futures": "/fapi/v1/time"}
# The venues' largest page: spot 1000, futures 1500.
MAX_LIMIT: Final[dict[Market, int]] = {"spot": 1000, "futures": 1500}


class BackfillError(Exception):
    """The venue could not be asked (breaker open, unreachable) or answered with an error or garbage."""


def klines_url(base_url: str, market: Market, symbol: str, timeframe: str, limit: int, start_ms: int | None) -> str:
    query: dict[str, Any] = {"symbol": symbol, "interval": timeframe, "limit": limit}
    if start_ms is not None:
        query["startTime"] = start_ms
    return f"{base_url.rstrip('/')}{KLINES_PATH[market]}?{urlencode(query)}"


def parse_klines(body: bytes, timeframe: str, now_ms: int) -> list[Bar]:
    """Closed bars from a klines body, oldest first; the still-forming last row (close time ≥ now) is dropped.

    ``now_ms`` is the venue's time (a lower bound of it, taken before the request): by our clock a host that lags
    would drop a closed row, and one that leads would keep the venue's forming bar as closed."""
    try:
        rows = orjson.loads(body)
        bars = []
        for row in rows:
            open_time, close_time = int(row[0]), int(row[6])
            if close_time >= now_ms:
                continue
            volume, buy = float(row[5]), float(row[9])
            bars.append(
                Bar(
                    timeframe=timeframe,
                    open_time=open_time,
                    open=float(row[1]),
                    high=float(row[2]),
                    low=float(row[3]),
                    close=float(row[4]),
                    volume=volume,
                    buy_volume=buy,
                    sell_volume=volume - buy,
                    quote_volume=float(row[7]),
                    trade_count=int(row[8]),
                    long_liquidations=0.0,
                    short_liquidations=0.0,
                    closed=True,
                    footprint=(),
                    footprint_tick=0.0,
                )
            )
    except (orjson.JSONDecodeError, TypeError, ValueError, IndexError) as exc:
        raise BackfillError(f"malformed klines body: {exc}") from exc
    return bars


class KlineBackfill:
    def __init__(self, market: Market, rest_url: str, http: httpx.AsyncClient, breaker: CircuitBreaker) -> None:
        self.market = market
        self.rest_url = rest_url
        self._http = http
        self.breaker = breaker
        self.requests = 0

    async def fetch(
        self, symbol: str, timeframe: str, *, limit: int, now_ms: int, start_ms: int | None = None
    ) -> list[Bar]:
        """Closed bars, oldest first; ``now_ms`` is the venue's time (see :func:`parse_klines`)."""
        if timeframe not in TIMEFRAMES:
            raise ValueError(f"unknown timeframe {timeframe!r}")
        limit = max(1, min(limit, MAX_LIMIT[self.market]))
        url = klines_url(self.rest_url, self.market, symbol, timeframe, limit, start_ms)
        return await self._get(url, KLINES_PATH[self.market], lambda body: parse_klines(body, timeframe, now_ms))

    async def server_time(self) -> int:
        """The venue's clock (epoch ms) as it answered; the caller reads it right away (a lower bound of now)."""
        path = TIME_PATH[self.market]
        return await self._get(f"{self.rest_url.rstrip('/')}{path}", path, _server_time)

    async def _get(self, url: str, path: str, parse: Callable[[bytes], _T]) -> _T:
        if not self.breaker.allow():
            held = self.breaker.retry_in()
            raise BackfillError(f"REST held back (circuit breaker or request budget) for {held:.1f} s")
        self.requests += 1
        try:
            response = await self._http.get(url)
        except httpx.HTTPError as exc:
            self.breaker.record_failure()
            raise BackfillError(f"venue unreachable: {exc!r}") from exc
        if response.status_code != 200:
            self.breaker.record_failure(response.status_code, parse_retry_after(response.headers.get("Retry-After")))
            raise BackfillError(f"HTTP {response.status_code} from {path}")
        try:
            parsed = parse(response.content)
        except BackfillError:
            self.breaker.record_failure()
            raise
        self.breaker.record_success()
        return parsed


def _server_time(body: bytes) -> int:
    try:
        return int(orjson.loads(body)["serverTime"])
    except (orjson.JSONDecodeError, TypeError, ValueError, KeyError) as exc:
        raise BackfillError(f"malformed server time body: {exc!r}") from exc
