"""Normalised market events shared by every venue connector.

Times are integer epoch milliseconds: ``exchange_ts`` is the venue's event time, ``receive_ts`` the local
wall clock when the frame arrived (their difference is the feed latency). Prices and quantities are floats:
venues send decimal strings and float parsing is deterministic, so equal strings always map to equal keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Venue = Literal["binance", "binance-futures", "bybit", "coinapi", "sim"]
VENUES: Final[tuple[Venue, ...]] = ("binance", "binance-futures", "bybit", "coinapi", "sim")

Side = Literal[1, -1]
BUY: Final[Side] = 1
SELL: Final[Side] = -1

# A price level as (price, quantity); quantity 0 in a diff removes the level.
Level = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Trade:
    """One (aggregate) trade; ``side`` is the taker's side: +1 the taker bought, -1 the taker sold."""

    venue: Venue
    symbol: str
    exchange_ts: int
    receive_ts: int
    price: float
    quantity: float
    side: Side
    trade_id: int


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """A full book from REST (or a snapshot message); levels best first."""

    venue: Venue
    symbol: str
    exchange_ts: int
    receive_ts: int
    last_update_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


@dataclass(frozen=True, slots=True)
class BookUpdate:
    """An incremental depth diff covering update ids ``first_update_id``..``last_update_id``.

    ``prev_update_id`` is the previous diff's last id for this symbol where the venue sends it (Binance
    USDⓈ-M ``pu``); it proves continuity when update ids are shared across symbols.
    """

    venue: Venue
    symbol: str
    exchange_ts: int
    receive_ts: int
    first_update_id: int
    last_update_id: int
    prev_update_id: int | None
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


@dataclass(frozen=True, slots=True)
class Liquidation:
    """A forced liquidation order. ``side`` is the liquidation *order's* side, as Binance reports it:
    -1 (a forced sell) closes a long position, +1 (a forced buy) closes a short."""

    venue: Venue
    symbol: str
    exchange_ts: int
    receive_ts: int
    price: float
    quantity: float
    side: Side

    @property
    def is_long_liquidation(self) -> bool:
        return self.side == SELL


@dataclass(frozen=True, slots=True)
class Kline:
    """A venue-computed candle (Binance kline); ``buy_volume`` is the taker-buy base volume, so the delta
    of a backfilled bar is exact rather than estimated."""

    venue: Venue
    symbol: str
    exchange_ts: int
    receive_ts: int
    interval: str
    open_time: int
    close_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    buy_volume: float
    trade_count: int
    first_trade_id: int
    last_trade_id: int
    closed: bool


@dataclass(frozen=True, slots=True)
class TradeGroup:
    """Trades of one symbol and one 1 m window merged into one item by the pipeline's coalescer (a burst the
    queue could not take one by one). It carries everything a bar needs, so applying it equals applying its
    trades in order: first/last price (open/close), high, low, count, per-side volume, Σ price·qty and
    per-price-bin volumes at ``tick`` (``bins``: (bin index, taker-sell qty, taker-buy qty), ascending)."""

    venue: Venue
    symbol: str
    first_ts: int  # exchange time of the first and last merged trade
    last_ts: int
    receive_ts: int  # of the first merged trade: the group's latency is its oldest trade's
    open: float
    high: float
    low: float
    close: float
    count: int
    buy_volume: float
    sell_volume: float
    quote_volume: float
    tick: float
    bins: tuple[tuple[int, float, float], ...]


MarketEvent = Trade | BookSnapshot | BookUpdate | Liquidation | Kline
