"""CoinAPI Market Data WebSocket (v1) wire format — pure except for the tick-rule state it is handed.

Documented at docs.coinapi.io/market-data/websocket (General, Messages):

- We send ``hello`` with ``apikey``, ``heartbeat`` (a ``heartbeat`` message every second), ``subscribe_data_type``
  and ``subscribe_filter_symbol_id``. Filters match symbol-id *prefixes*; a trailing ``$`` makes a filter exact,
  so ``BINANCE_SPOT_BTC_USDT$`` does not also subscribe ``BINANCE_SPOT_BTC_USDTX``.
- ``trade``: ``{symbol_id, sequence, time_exchange, time_coinapi, uuid, price, size, taker_side}`` with
  ``taker_side`` one of BUY, SELL (reported by the exchange), BUY_ESTIMATED, SELL_ESTIMATED (CoinAPI's inference),
  UNKNOWN (neither).
- ``book20``: the top 20 levels of each side, ``asks``/``bids`` as ``[{price, size}]`` best first, sent whole every
  time — so each one becomes a :class:`~app.market.events.BookSnapshot`, ``last_update_id`` = its ``sequence``
  (which, like every CoinAPI sequence, is only valid for the lifespan of one connection).
- ``reconnect`` ``{within_seconds, before_time}``: the server will close this connection within that window.
- ``error`` ``{message}``: the server disconnects after sending it.
- Heartbeats arrive as ``{"type": "hearbeat"}`` — CoinAPI's own spelling; ``heartbeat`` is accepted too.

Symbols: a CoinAPI symbol id ``EXCHANGE_TYPE_BASE_QUOTE[_…]`` maps to our symbol ``BASEQUOTE`` (+ any suffix, such
as a futures expiry) in upper case under venue ``coinapi``: ``BINANCE_SPOT_BTC_USDT`` → ``BTCUSDT``. Ids from
different exchanges can collide on one symbol, so one connector refuses two ids with the same symbol; an explicit
``{symbol_id: symbol}`` mapping overrides the derivation.

The other direction is what configuration needs: ``DELTAFLOW_FEEDS`` names *our* symbols (``coinapi:BTCUSDT``, the
same spelling as every other venue, so routes and Redis keys look alike), and :func:`coinapi_symbol_id` turns one
into a CoinAPI id. An explicit entry of ``DELTAFLOW_COINAPI_SYMBOL_MAP`` (``{"BTCUSDT": "COINBASE_SPOT_BTC_USD"}``)
wins; otherwise the symbol is split at a known quote asset (the longest that matches: ``BTCUSDT`` → ``BTC`` +
``USDT``, never ``USD``) and prefixed with ``DELTAFLOW_COINAPI_SYMBOL_PREFIX`` (default ``BINANCE_SPOT``), giving
``BINANCE_SPOT_BTC_USDT`` — what a Binance user means by ``BTCUSDT``. A symbol with no known quote suffix must be
mapped explicitly; the error says so.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

from app.market.events import BUY, SELL, BookSnapshot, Level, Side, Trade, Venue

VENUE: Final[Venue] = "coinapi"
DEFAULT_WS_URL: Final = "wss://ws.coinapi.io/v1/"
DATA_TYPES: Final = ("trade", "book20")
BOOK_TYPES: Final = frozenset({"book5", "book20", "book50"})
HEARTBEAT_TYPES: Final = frozenset({"hearbeat", "heartbeat"})
# Error texts that no retry can fix: the key is wrong, revoked or out of quota. Anything else is transient.
AUTH_ERROR_MARKERS: Final = ("api key", "apikey", "unauthorized", "unauthorised", "forbidden", "quota", "subscription")
_INT63: Final = (1 << 63) - 1
# Quote assets recognised when deriving a symbol id from our symbol; longest first, so USDT wins over USD.
QUOTE_ASSETS: Final = tuple(
    sorted(
        ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "DAI", "USD", "EUR", "GBP", "JPY", "TRY", "BRL", "BTC", "ETH", "BNB"),
        key=len,
        reverse=True,
    )
)
_PREFIX = re.compile(r"^[A-Z0-9]+_[A-Z0-9]+$")

TAKER_SIDES: Final[dict[str, tuple[Side | None, bool]]] = {
    "BUY": (BUY, True),
    "SELL": (SELL, True),
    "BUY_ESTIMATED": (BUY, False),
    "SELL_ESTIMATED": (SELL, False),
    "UNKNOWN": (None, False),
}


class MalformedFrameError(ValueError):
    """A message that is not valid JSON or lacks a field its type requires."""


def default_symbol(symbol_id: str) -> str:
    parts = symbol_id.upper().split("_")
    if len(parts) < 4 or not all(parts):
        raise ValueError(f"not a CoinAPI symbol id (EXCHANGE_TYPE_BASE_QUOTE): {symbol_id!r}")
    return "".join(parts[2:])


def symbol_map(symbol_ids: Iterable[str] | Mapping[str, str]) -> dict[str, str]:
    """``{SYMBOL_ID: SYMBOL}``, refusing two ids that would write into the same ``coinapi`` symbol."""
    if isinstance(symbol_ids, Mapping):
        pairs = [(k.upper(), v.upper()) for k, v in symbol_ids.items()]
    else:
        pairs = [(k.upper(), default_symbol(k)) for k in symbol_ids]
    out: dict[str, str] = {}
    owners: dict[str, str] = {}
    for symbol_id, symbol in pairs:
        if symbol in owners and owners[symbol] != symbol_id:
            raise ValueError(f"{owners[symbol]} and {symbol_id} both map to {symbol}")
        owners[symbol] = symbol_id
        out[symbol_id] = symbol
    if not out:
        raise ValueError("at least one symbol id is required")
    return out


def coinapi_symbol_id(symbol: str, prefix: str, overrides: Mapping[str, str]) -> str:
    """The CoinAPI symbol id of our ``symbol``: an explicit override, else ``<prefix>_<BASE>_<QUOTE>``.

    Raises ValueError (naming the settings to change) for a bad prefix or a symbol with no known quote asset.
    """
    symbol = symbol.upper()
    explicit = {k.upper(): v.upper() for k, v in overrides.items()}
    if symbol in explicit:
        default_symbol(explicit[symbol])  # validates the EXCHANGE_TYPE_BASE_QUOTE shape
        return explicit[symbol]
    prefix = prefix.upper()
    if not _PREFIX.match(prefix):
        raise ValueError(f"DELTAFLOW_COINAPI_SYMBOL_PREFIX {prefix!r} is not EXCHANGE_TYPE (e.g. BINANCE_SPOT)")
    for quote in QUOTE_ASSETS:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return f"{prefix}_{symbol[: -len(quote)]}_{quote}"
    raise ValueError(
        f"cannot derive a CoinAPI symbol id for {symbol!r} (no known quote asset suffix);"
        f' map it in DELTAFLOW_COINAPI_SYMBOL_MAP, e.g. {{"{symbol}": "{prefix}_BASE_QUOTE"}}'
    )


def hello_message(
    api_key: str, symbol_ids: Iterable[str], *, heartbeat: bool = True, data_types: Iterable[str] = DATA_TYPES
) -> str:
    """The ``hello`` as JSON text (a text frame, as the protocol expects; ``bytes`` would go out as binary)."""
    return orjson.dumps(
        {
            "type": "hello",
            "apikey": api_key,
            "heartbeat": heartbeat,
            "subscribe_data_type": list(data_types),
            "subscribe_filter_symbol_id": [f"{s}$" for s in symbol_ids],
        }
    ).decode()


def parse_time_ms(value: str) -> int:
    """ISO-8601 with up to 7 fractional digits and a ``Z`` (``2017-03-18T22:42:21.3763342Z``) → epoch ms."""
    return int(datetime.fromisoformat(value).timestamp() * 1000)


def trade_id(raw: str) -> int:
    """CoinAPI trade ids are UUIDs; the low 63 bits make an integer ``Trade.trade_id`` that is unique in practice."""
    return uuid.UUID(raw).int & _INT63


def is_auth_error(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in AUTH_ERROR_MARKERS)


class TickRule:
    """Sides for ``UNKNOWN`` trades by the tick rule: a trade above the symbol's previous price was buyer-initiated,
    below seller-initiated, at the same price takes the previous trade's side; the very first defaults to BUY.
    The state is one price and one side per subscribed symbol, so it is bounded by the subscription."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, Side]] = {}

    def side(self, symbol: str, price: float, reported: Side | None) -> Side:
        previous = self._last.get(symbol)
        if reported is not None:
            side = reported
        elif previous is None:
            side = BUY
        elif price != previous[0]:
            side = BUY if price > previous[0] else SELL
        else:
            side = previous[1]
        self._last[symbol] = (price, side)
        return side


@dataclass(frozen=True, slots=True)
class Message:
    """One parsed message: ``type`` always; the event for market data; the details of control messages."""

    type: str
    event: Trade | BookSnapshot | None = None
    trade_uuid: str | None = None
    # Whether the exchange reported the aggressor (BUY/SELL). ``Trade`` has no field for it, so it travels here:
    # estimated sides are CoinAPI's inference, unknown ones (``side_known`` false) the tick rule's.
    side_exact: bool = True
    side_known: bool = True
    text: str = ""  # error message
    within_seconds: float | None = None  # reconnect window


def _levels(raw: Iterable[Mapping[str, Any]], limit: int) -> tuple[Level, ...]:
    return tuple((float(level["price"]), float(level["size"])) for _, level in zip(range(limit), raw, strict=False))


def parse_message(
    raw: bytes | str, symbols: Mapping[str, str], receive_ts: int, ticks: TickRule, max_levels: int = 50
) -> Message:
    """Parse one message; market data for symbol ids outside ``symbols`` comes back with no event."""
    try:
        message = orjson.loads(raw)
        if not isinstance(message, dict):
            raise MalformedFrameError("message is not an object")
        kind = message["type"]
        if not isinstance(kind, str):
            raise MalformedFrameError("type is not a string")
        return _parse(kind, message, symbols, receive_ts=receive_ts, ticks=ticks, levels=max_levels)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, MalformedFrameError):
            raise
        raise MalformedFrameError(repr(exc)) from exc


def _parse(
    kind: str, message: Mapping[str, Any], symbols: Mapping[str, str], *, receive_ts: int, ticks: TickRule, levels: int
) -> Message:
    if kind == "trade" or kind in BOOK_TYPES:
        symbol = symbols.get(str(message["symbol_id"]).upper())
        if symbol is None:
            return Message(kind)
        if kind == "trade":
            return _trade(message, symbol, receive_ts, ticks)
        snapshot = BookSnapshot(
            venue=VENUE,
            symbol=symbol,
            exchange_ts=parse_time_ms(message["time_exchange"]),
            receive_ts=receive_ts,
            last_update_id=int(message.get("sequence") or 0),
            bids=_levels(message["bids"], levels),
            asks=_levels(message["asks"], levels),
        )
        return Message(kind, event=snapshot)
    return _control(kind, message)


def _control(kind: str, message: Mapping[str, Any]) -> Message:
    if kind in HEARTBEAT_TYPES:
        return Message("heartbeat")
    if kind == "reconnect":
        return Message(kind, within_seconds=float(message.get("within_seconds") or 0.0))
    if kind == "error":
        return Message(kind, text=str(message.get("message") or ""))
    return Message(kind)


def _trade(message: Mapping[str, Any], symbol: str, receive_ts: int, ticks: TickRule) -> Message:
    reported, exact = TAKER_SIDES[message["taker_side"]]
    price, size = float(message["price"]), float(message["size"])
    if size == 0.0:
        # Documented: a zero size only marks a price point (index series), it is not traded volume.
        return Message("trade")
    raw_uuid = str(message["uuid"])
    trade = Trade(
        venue=VENUE,
        symbol=symbol,
        exchange_ts=parse_time_ms(message["time_exchange"]),
        receive_ts=receive_ts,
        price=price,
        quantity=size,
        side=ticks.side(symbol, price, reported),
        trade_id=trade_id(raw_uuid),
    )
    return Message("trade", event=trade, trade_uuid=raw_uuid, side_exact=exact, side_known=reported is not None)
