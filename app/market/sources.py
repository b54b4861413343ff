"""What feeds a pipeline: one venue connector (or the simulator) per feed, built from settings, and its status.

Split from :mod:`app.market.runtime` (which owns leases, pipelines and backfill): this module knows the venues.

CoinAPI feeds name our symbols (``coinapi:BTCUSDT``); :func:`coinapi_symbol_ids` maps them to CoinAPI symbol ids
(see :func:`app.market.venues.coinapi.coinapi_symbol_id`: ``DELTAFLOW_COINAPI_SYMBOL_MAP`` entries, else
``DELTAFLOW_COINAPI_SYMBOL_PREFIX`` + base + quote, ``BINANCE_SPOT_BTC_USDT``). Without an API key a CoinAPI feed
cannot connect: its source is a :class:`MisconfiguredSource` that never connects and whose status says what to set,
so the rest of the process (other feeds, the API) carries on. A key that CoinAPI refuses stops that feed's
connector (retrying cannot fix it, and hammering CoinAPI with a bad key would only burn its quota) and the status
says ``refused`` until the process is restarted with another key.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any, Protocol

import httpx

from app.config import Settings
from app.market.events import Venue
from app.market.feeds import Feed
from app.market.recovery import Backoff, CircuitBreaker
from app.market.venues.binance import Market
from app.market.venues.binance_client import BinanceConnector, ConnectorLimits, EventSink, GapSink
from app.market.venues.bybit_client import BybitConnector, BybitLimits
from app.market.venues.coinapi import coinapi_symbol_id
from app.market.venues.coinapi_client import CoinApiConnector, CoinApiLimits
from app.market.venues.sim import SIMULATED_NOTICE, SimConfig, SimMarket

MARKETS: dict[str, Market] = {"binance": "spot", "binance-futures": "futures"}
MISSING_COINAPI_KEY = "DELTAFLOW_COINAPI_API_KEY is not set: CoinAPI feeds cannot connect until it is"


async def _idle() -> None:
    await asyncio.Event().wait()


class Source(Protocol):
    """What the runtime needs of a venue connector or the simulator."""

    def start(self) -> asyncio.Task[None]: ...

    async def stop(self) -> None: ...


class Shared:
    """Per-venue resources shared by that venue's feeds in this process."""

    def __init__(self, *, rest_budget_per_minute: int | None = None) -> None:
        self.http = httpx.AsyncClient(timeout=10.0)
        self.breakers: dict[str, CircuitBreaker] = {}
        self.rest_budget_per_minute = rest_budget_per_minute

    def breaker(self, venue: str) -> CircuitBreaker:
        """The venue's breaker, which also holds its REST request budget (one per venue in this process)."""
        if venue not in self.breakers:
            self.breakers[venue] = CircuitBreaker(budget_per_minute=self.rest_budget_per_minute)
        return self.breakers[venue]


class MisconfiguredSource:
    """A feed that cannot run with the current settings: it holds its place (and its status says why) without
    connecting anywhere, until the process is restarted with a fixed configuration."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self._task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(_idle(), name="misconfigured-source")
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class CoinApiSource(CoinApiConnector):
    """The CoinAPI connector as a feed source: once CoinAPI refuses the key the connector returns, and this keeps
    the feed (ended tasks would make the runtime restart it, reconnecting with the same bad key every few s)."""

    async def run(self) -> None:
        await super().run()
        await _idle()  # refused: stay down; the status says so until a restart


def coinapi_symbol_ids(settings: Settings, feeds: tuple[Feed, ...]) -> dict[str, str]:
    """``{our symbol: CoinAPI symbol id}`` for the coinapi feeds; raises ValueError naming the setting to fix."""
    ids = {
        symbol: coinapi_symbol_id(symbol, settings.coinapi_symbol_prefix, settings.coinapi_symbol_map)
        for venue, symbol in feeds
        if venue == "coinapi"
    }
    owners: dict[str, str] = {}
    for symbol, symbol_id in ids.items():
        if symbol_id in owners:
            raise ValueError(f"coinapi:{owners[symbol_id]} and coinapi:{symbol} both map to {symbol_id}")
        owners[symbol_id] = symbol
    return ids


def rest_url(settings: Settings, venue: str) -> str:
    return settings.binance_futures_rest_url if venue == "binance-futures" else settings.binance_rest_url


def backoff(settings: Settings) -> Backoff:
    return Backoff(
        base_s=settings.market_backoff_base_seconds,
        cap_s=max(settings.market_backoff_cap_seconds, settings.market_backoff_base_seconds),
        stable_after_s=settings.market_stable_connection_seconds,
    )


def _off_if_zero(seconds: float) -> float | None:
    """Settings say 0 for "off"; the connectors' limits say None."""
    return seconds if seconds > 0 else None


def build_source(
    settings: Settings,
    venue: Venue,
    symbol: str,
    sink: EventSink,
    shared: Shared,
    *,
    on_gap: GapSink | None = None,
) -> Source:
    """The connector (or simulator) of one feed, emitting into ``sink``; ``on_gap`` hears of stream breaks."""
    s = settings
    book_silence_s = _off_if_zero(s.market_book_silence_seconds)
    trade_silence_s = _off_if_zero(s.market_trade_silence_seconds)
    if venue == "sim":
        seed = s.sim_seed ^ zlib.crc32(symbol.encode())  # per symbol, so two simulated symbols differ
        return SimMarket([symbol], sink, SimConfig(seed=seed, rate=s.sim_rate))
    if venue == "bybit":
        limits = BybitLimits(book_silence_s=book_silence_s, trade_silence_s=trade_silence_s)
        return BybitConnector([symbol], sink, ws_url=s.bybit_ws_url, limits=limits, backoff=backoff(s))
    if venue == "coinapi":
        key = s.coinapi_api_key.get_secret_value()
        if not key:
            return MisconfiguredSource(MISSING_COINAPI_KEY)
        symbol_id = coinapi_symbol_ids(s, ((venue, symbol),))[symbol]
        return CoinApiSource(
            key,
            {symbol_id: symbol},
            sink,
            ws_url=s.coinapi_ws_url,
            limits=CoinApiLimits(
                rotation_timeout_s=s.market_rotation_timeout_seconds,
                book_silence_s=book_silence_s,
                trade_silence_s=trade_silence_s,
            ),
            backoff=backoff(s),
        )
    market = MARKETS[venue]
    return BinanceConnector(
        market,
        [symbol],
        sink,
        ws_url=s.binance_futures_ws_url if market == "futures" else s.binance_ws_url,
        rest_url=rest_url(s, venue),
        limits=ConnectorLimits(
            max_buffered_diffs=s.market_max_buffered_diffs,
            max_book_levels=s.market_max_book_levels,
            min_resync_interval_s=s.market_min_resync_interval_seconds,
            max_connection_age_s=s.binance_max_connection_age_seconds,
            rotation_timeout_s=s.market_rotation_timeout_seconds,
            book_silence_s=book_silence_s,
            trade_silence_s=trade_silence_s,
            snapshot_cache_s=s.market_snapshot_cache_seconds,
        ),
        backoff=backoff(s),
        breaker=shared.breaker(venue),
        http_client=shared.http,
        on_gap=on_gap,
    )


def source_status(source: Source | None) -> dict[str, Any]:
    """The connection part of a feed's status (``GET /v1/markets``): connected, reconnects, breaker, errors."""
    out: dict[str, Any] = {}
    if isinstance(source, BinanceConnector):
        stats = source.stats
        out = {
            "connected": stats.connected,
            "reconnects": max(0, stats.connects - 1 - stats.rotations) if stats.connected else stats.disconnects,
            "rotations": stats.rotations,
            "resynced": stats.resyncs,
            "breaker": source.breaker.state.value,
            "rest_budget_refusals": source.breaker.budget_refusals,
            # Silent book streams probed: resynced in place (the venue's book had moved) or found merely quiet.
            "stale_streams": stats.stale_streams,
            "quiet_probes": stats.quiet_probes,
            "snapshot_cache_hits": stats.snapshot_cache_hits,
            "last_error": stats.last_error,
        }
    elif isinstance(source, BybitConnector):
        out = {
            "connected": source.stats.connected,
            "reconnects": source.stats.reconnects,
            "resynced": source.stats.resyncs,
            "stale_streams": source.stats.stale_streams,
            "breaker": "n/a",  # push-only: no REST calls to break
            "last_error": source.stats.last_error,
        }
    elif isinstance(source, CoinApiConnector):
        coinapi = source.stats
        out = {
            "connected": coinapi.connected,
            "reconnects": coinapi.reconnects,
            "rotations": coinapi.rotations,
            "stale_streams": coinapi.stale_streams,
            "breaker": "n/a",  # push-only
            "last_error": coinapi.last_error,
            "symbol_id": next(iter(source.symbol_ids)),
        }
        if coinapi.fatal:
            out["state"] = "refused"
    elif isinstance(source, MisconfiguredSource):
        out = {"connected": False, "reconnects": 0, "breaker": "n/a", "last_error": source.reason}
        out["state"] = "misconfigured"
    elif isinstance(source, SimMarket):
        out = {"connected": source.stats.connected, "reconnects": 0, "breaker": "closed", "notice": SIMULATED_NOTICE}
    return out
