"""Bybit v5 public (linear) wire format and order-book continuity — pure, no I/O.

Documented formats (bybit-exchange.github.io/docs/v5/websocket/public/{trade,orderbook,all-liquidation}, v5/ws/connect):

- ``publicTrade.{symbol}``: ``data`` is a list of ``{T, s, S, v, p, i, BT, …}``; ``S`` is the **taker's** side
  (``Buy`` → +1). Linear trade ids ``i`` are UUID strings, spot ones decimal strings (see :func:`trade_id`).
- ``orderbook.{depth}.{symbol}``: ``type`` ``snapshot`` or ``delta``; ``data`` ``{s, b, a, u, seq}``; quantities are
  absolute, ``"0"`` deletes a level. ``u`` is the per-topic update id, consecutive in normal operation; a message with
  ``u == 1`` is a full book the venue re-sends after a service restart, so it is treated as a snapshot whatever its
  ``type`` says. ``seq`` is the matching engine's cross sequence: increasing, not consecutive.
- ``allLiquidation.{symbol}``: ``data`` is a list of ``{T, s, S, v, p}`` where ``S`` is the side of the liquidated
  **position** — ``Buy`` means a long was liquidated. :class:`~app.market.events.Liquidation` stores the liquidation
  *order's* side (Binance's convention), and closing a long is a forced sell, so ``S=Buy`` → ``side=-1``
  (``is_long_liquidation``) and ``S=Sell`` → ``side=+1``.
- Control replies: ``{"success": …, "ret_msg": …, "op": "subscribe"|"unsubscribe", …}``; the pong to
  ``{"op":"ping"}`` is ``{"op":"ping","ret_msg":"pong",…}`` on spot/linear/inverse and ``{"op":"pong",…}`` on
  option/spread — both are accepted.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

import orjson

from app.market.book import OrderBook
from app.market.events import BUY, SELL, BookSnapshot, BookUpdate, Level, Liquidation, MarketEvent, Side, Trade, Venue

VENUE: Final[Venue] = "bybit"
DEFAULT_WS_URL: Final = "wss://stream.bybit.com/v5/public/linear"
DEFAULT_BOOK_DEPTH: Final = 50
RESTART_UPDATE_ID: Final = 1
_INT63: Final = (1 << 63) - 1


class MalformedFrameError(ValueError):
    """A frame that is not valid JSON or lacks a field its topic requires."""


def topics(symbol: str, depth: int = DEFAULT_BOOK_DEPTH) -> tuple[str, str, str]:
    return (f"publicTrade.{symbol}", book_topic(symbol, depth), f"allLiquidation.{symbol}")


def book_topic(symbol: str, depth: int = DEFAULT_BOOK_DEPTH) -> str:
    return f"orderbook.{depth}.{symbol}"


def request(op: str, args: Sequence[str] = (), req_id: str | None = None) -> str:
    """A request as JSON *text*: the venue expects text frames, and websockets sends ``bytes`` as binary ones."""
    body: dict[str, Any] = {"op": op}
    if args:
        body["args"] = list(args)
    if req_id is not None:
        body["req_id"] = req_id
    return orjson.dumps(body).decode()


def trade_id(raw: str) -> int:
    """An integer id for ``Trade.trade_id``: decimal ids as they are; UUIDs (linear) folded to their low 63 bits,
    which keeps ids unique in practice and positive in a signed 64-bit column."""
    if raw.isdigit():
        return int(raw)
    return uuid.UUID(raw).int & _INT63


@dataclass(frozen=True, slots=True)
class Control:
    """A reply to one of our requests (subscribe/unsubscribe ack, pong)."""

    op: str
    success: bool
    message: str
    req_id: str

    @property
    def is_pong(self) -> bool:
        return self.op == "pong" or (self.op == "ping" and self.message == "pong")


@dataclass(frozen=True, slots=True)
class Parsed:
    events: tuple[MarketEvent, ...] = ()
    control: Control | None = None
    seq: int | None = None  # the book message's cross sequence


IGNORED: Final = Parsed()


def _side(raw: object) -> Side:
    if raw == "Buy":
        return BUY
    if raw == "Sell":
        return SELL
    raise MalformedFrameError(f"unknown side {raw!r}")


def _levels(raw: Iterable[Sequence[str]]) -> tuple[Level, ...]:
    return tuple((float(price), float(qty)) for price, qty, *_ in raw)


def _items(data: object) -> list[Mapping[str, Any]]:
    # Documented as lists; accept a lone object too (older all-liquidation examples show one).
    items: list[object] = data if isinstance(data, list) else [data]
    out: list[Mapping[str, Any]] = [item for item in items if isinstance(item, dict)]
    if len(out) != len(items):
        raise MalformedFrameError("data entries must be objects")
    return out


def parse_frame(raw: bytes | str, receive_ts: int) -> Parsed:
    try:
        message = orjson.loads(raw)
        if not isinstance(message, dict):
            raise MalformedFrameError("frame is not an object")
        return _parse(message, receive_ts)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, MalformedFrameError):
            raise
        raise MalformedFrameError(repr(exc)) from exc


def _parse(message: Mapping[str, Any], receive_ts: int) -> Parsed:
    topic = message.get("topic")
    if not isinstance(topic, str):
        op = message.get("op")
        if not isinstance(op, str):
            return IGNORED
        return Parsed(
            control=Control(
                op=op,
                success=bool(message.get("success", True)),
                message=str(message.get("ret_msg") or ""),
                req_id=str(message.get("req_id") or ""),
            )
        )
    channel = topic.split(".", 1)[0]
    if channel == "publicTrade":
        trades = tuple(
            Trade(
                venue=VENUE,
                symbol=item["s"],
                exchange_ts=int(item["T"]),
                receive_ts=receive_ts,
                price=float(item["p"]),
                quantity=float(item["v"]),
                side=_side(item["S"]),
                trade_id=trade_id(str(item["i"])),
            )
            for item in _items(message["data"])
        )
        return Parsed(events=trades)
    if channel == "allLiquidation":
        liquidations = tuple(
            Liquidation(
                venue=VENUE,
                symbol=item["s"],
                exchange_ts=int(item["T"]),
                receive_ts=receive_ts,
                price=float(item["p"]),
                quantity=float(item["v"]),
                # S is the liquidated position; the forced order that closes it trades the other way.
                side=SELL if _side(item["S"]) == BUY else BUY,
            )
            for item in _items(message["data"])
        )
        return Parsed(events=liquidations)
    if channel == "orderbook":
        return _parse_book(message, receive_ts)
    return IGNORED


def _parse_book(message: Mapping[str, Any], receive_ts: int) -> Parsed:
    data = message["data"]
    update_id = int(data["u"])
    seq = data.get("seq")
    bids, asks = _levels(data["b"]), _levels(data["a"])
    common = {"venue": VENUE, "symbol": data["s"], "exchange_ts": int(message["ts"]), "receive_ts": receive_ts}
    kind = message["type"]
    event: BookSnapshot | BookUpdate
    if kind == "snapshot" or update_id == RESTART_UPDATE_ID:
        event = BookSnapshot(**common, last_update_id=update_id, bids=bids, asks=asks)
    elif kind == "delta":
        event = BookUpdate(
            **common,
            first_update_id=update_id,
            last_update_id=update_id,
            prev_update_id=None,
            bids=bids,
            asks=asks,
        )
    else:
        raise MalformedFrameError(f"unknown book message type {kind!r}")
    return Parsed(events=(event,), seq=None if seq is None else int(seq))


class BookResult(Enum):
    SNAPSHOT = "snapshot"  # book reset to the snapshot
    APPLIED = "applied"
    STALE = "stale"  # u at or below the last applied: a replay, dropped
    DROPPED = "dropped"  # no snapshot yet on this subscription: nothing to apply it to
    GAP = "gap"  # continuity broken: the book is invalid until a new snapshot


@dataclass(slots=True)
class BookStats:
    snapshots: int = 0
    applied: int = 0
    stale: int = 0
    dropped: int = 0
    gaps: int = 0
    crossed: int = 0


class BybitBook:
    """One symbol's book kept from ``orderbook.N`` snapshots and deltas.

    Continuity check on every delta: its ``u`` must be exactly the previous ``u + 1`` and its ``seq`` must not go
    below the previous ``seq``. A delta with ``u`` at or below the last applied one is a replay and is dropped.
    Anything else is a gap: the book is cleared and stays invalid (deltas dropped) until the caller gets a new
    snapshot by resubscribing. There is no REST step: Bybit sends the snapshot in band on every subscribe.
    """

    __slots__ = ("book", "last_seq", "last_update_id", "stats", "symbol", "synced")

    def __init__(self, symbol: str, max_levels: int) -> None:
        self.symbol = symbol
        self.book = OrderBook(max_levels)
        self.synced = False
        self.last_update_id = 0
        self.last_seq: int | None = None
        self.stats = BookStats()

    def invalidate(self) -> None:
        self.synced = False
        self.book.clear()
        self.last_update_id = 0
        self.last_seq = None

    def on_snapshot(self, snapshot: BookSnapshot, seq: int | None) -> BookResult:
        self.book.apply_snapshot(snapshot)
        self.synced = True
        self.last_update_id = snapshot.last_update_id
        self.last_seq = seq
        self.stats.snapshots += 1
        return BookResult.SNAPSHOT

    def on_update(self, update: BookUpdate, seq: int | None) -> BookResult:
        if not self.synced:
            self.stats.dropped += 1
            return BookResult.DROPPED
        update_id = update.last_update_id
        if update_id <= self.last_update_id:
            self.stats.stale += 1
            return BookResult.STALE
        seq_backwards = seq is not None and self.last_seq is not None and seq < self.last_seq
        if update_id != self.last_update_id + 1 or seq_backwards:
            self.stats.gaps += 1
            self.invalidate()
            return BookResult.GAP
        self.book.apply_update(update)
        self.last_update_id = update_id
        if seq is not None:
            self.last_seq = seq
        self.stats.applied += 1
        if self.book.is_crossed:
            self.stats.crossed += 1
        return BookResult.APPLIED
