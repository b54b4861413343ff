"""The Redis key layout for market data: every key the ingestion writes or the API reads is named here.

Every per-feed key carries the Redis Cluster hash tag ``{venue:symbol}``, so all keys of one feed live in one
slot: the bar-closing Lua script and any multi-key read touch one node, and the same code runs on one Redis or
a Cluster. Every key has a bound:

``{v:s}`` below is ``{venue:symbol}``; bounds name settings without their ``market_`` prefix.

- ``md:{v:s}:bars:<tf>``     ZSET    closed bars, score = open time (ms)           newest ``bar_retention`` kept
- ``md:{v:s}:forming:<tf>``  STRING  the forming bar (``closed: false``)           TTL ``forming_ttl_seconds``
- ``md:{v:s}:fp:<tf>``       ZSET    closed bars' footprints, score = open time    newest ``footprint_retention``
- ``md:{v:s}:liq:<tf>``      ZSET    closed bars' liquidations (bars with any)     newest ``bar_retention`` kept
- ``md:{v:s}:fpf:<tf>``      STRING  the forming bar's footprint + liquidations    TTL ``forming_ttl_seconds``
- ``md:{v:s}:book``          STRING  top ``book_depth`` levels per side            TTL ``book_ttl_seconds``
- ``md:{v:s}:liqs``          STREAM  individual liquidations                       ``MAXLEN ~ liquidation_stream_len``
- ``md:{v:s}:status``        STRING  feed status (written by the lease holder)     TTL ``status_ttl_seconds``
- ``md:{v:s}:lease``         STRING  the ingestor lease's owner token              PX ``lease_ttl_seconds``
- ``md:{v:s}:closed``        PUBSUB  ``<tf>:<open time>`` when a newest bar closes  (a channel: nothing stored)
- ``md:feeds``               ZSET    ``venue:symbol`` → last status write (ms)     entries older than the status TTL
                                                                                   pruned on each write; EXPIRE = TTL

Bar members are ``{t, o, h, l, c, v, buy_v, sell_v, delta, trades, vwap, closed}`` exactly as ``GET /v1/candles``
returns them (``t`` = open time, epoch ms), so a route splices them without decoding. Footprints are
``{t, tick, levels: [[price, bid_volume, ask_volume], …]}`` (bid volume = taker sells); per-bar liquidations
``{t, long, short}`` (quantities of long and short positions force-closed); the forming detail carries both.
"""

from __future__ import annotations

import re
from typing import Final

from app.market.aggregation import TIMEFRAMES
from app.market.events import VENUES

PREFIX: Final = "md"
FEEDS_KEY: Final = f"{PREFIX}:feeds"
# Symbols are exchange spellings: letters, digits and a few separators; never braces or colons, which would
# break the hash tag or the key structure.
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,31}$")


class InvalidFeed(ValueError):
    """An unknown venue, a malformed symbol or an unknown timeframe."""


def check_feed(venue: str, symbol: str) -> None:
    if venue not in VENUES:
        raise InvalidFeed(f"unknown venue {venue!r}; valid: {', '.join(VENUES)}")
    if not _SYMBOL.match(symbol):
        raise InvalidFeed(f"invalid symbol {symbol!r}: upper-case letters, digits, '.', '_' or '-', up to 32")


def check_timeframe(timeframe: str) -> None:
    if timeframe not in TIMEFRAMES:
        raise InvalidFeed(f"unknown timeframe {timeframe!r}; valid: {', '.join(TIMEFRAMES)}")


def tag(venue: str, symbol: str) -> str:
    """The hash tag shared by every key of one feed."""
    check_feed(venue, symbol)
    return f"{PREFIX}:{{{venue}:{symbol}}}"


def feed_id(venue: str, symbol: str) -> str:
    return f"{venue}:{symbol}"


class FeedKeys:
    """All keys of one (venue, symbol), computed once (the writer uses them on every flush)."""

    __slots__ = (
        "bar_closed",
        "bars",
        "book",
        "footprints",
        "forming",
        "forming_detail",
        "lease",
        "liquidations",
        "liquidations_per_bar",
        "status",
    )

    def __init__(self, venue: str, symbol: str) -> None:
        base = tag(venue, symbol)
        self.bars = {tf: f"{base}:bars:{tf}" for tf in TIMEFRAMES}
        self.forming = {tf: f"{base}:forming:{tf}" for tf in TIMEFRAMES}
        self.footprints = {tf: f"{base}:fp:{tf}" for tf in TIMEFRAMES}
        self.liquidations_per_bar = {tf: f"{base}:liq:{tf}" for tf in TIMEFRAMES}
        self.forming_detail = {tf: f"{base}:fpf:{tf}" for tf in TIMEFRAMES}
        self.book = f"{base}:book"
        self.bar_closed = f"{base}:closed"
        self.liquidations = f"{base}:liqs"
        self.status = f"{base}:status"
        self.lease = f"{base}:lease"
