"""Binance spot and USDⓈ-M futures wire format: combined-stream frames and REST depth snapshots.

Pure functions: bytes in, normalised events out. The connector (``binance_client``) owns the I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal
from urllib.parse import urlencode

import orjson

from app.market.events import (
    BUY,
    SELL,
    BookSnapshot,
    BookUpdate,
    Kline,
    Level,
    Liquidation,
    MarketEvent,
    Trade,
    Venue,
)

Market = Literal["spot", "futures"]

VENUE_OF: Final[dict[Market, Venue]] = {"spot": "binance", "futures": "binance-futures"}
DEPTH_PATH: Final[dict[Market, str]] = {"spot": "/api/v3/depth", "futures": "/fapi/v1/depth"}
DEFAULT_WS_URL: Final[dict[Market, str]] = {
    "spot": "wss://stream.binance.com:9443",
    "futures": "wss://fstream.binance.com",
}
DEFAULT_REST_URL: Final[dict[Market, str]] = {
    "spot": "https://api.binance.com",
    "futures": "https://fapi.binance.com",
}
# forceOrder exists only on the derivatives streams.
DEFAULT_STREAMS: Final[dict[Market, tuple[str, ...]]] = {
    "spot": ("aggTrade", "depth@100ms", "kline_1m"),
    "futures": ("aggTrade", "depth@100ms", "kline_1m", "forceOrder"),
}


class MalformedFrameError(ValueError):
    """A frame that is not valid JSON or lacks a field its event type requires."""


def stream_url(base_url: str, symbols: Sequence[str], streams: Iterable[str]) -> str:
    """The combined-stream URL ``<base>/stream?streams=btcusdt@aggTrade/...`` (names in lower case)."""
    names = "/".join(f"{symbol.lower()}@{stream}" for symbol in symbols for stream in streams)
    return f"{base_url.rstrip('/')}/stream?streams={names}"


def depth_url(base_url: str, market: Market, symbol: str, limit: int) -> str:
    query = urlencode({"symbol": symbol.upper(), "limit": limit})
    return f"{base_url.rstrip('/')}{DEPTH_PATH[market]}?{query}"


def _levels(raw: Iterable[Sequence[str]]) -> tuple[Level, ...]:
    return tuple((float(price), float(qty)) for price, qty, *_ in raw)


def parse_frame(raw: bytes | str, venue: Venue, receive_ts: int) -> MarketEvent | None:
    """Normalise one combined-stream frame; ``None`` for streams this layer does not use (bookTicker …)."""
    try:
        message = orjson.loads(raw)
        data = message["data"] if isinstance(message, dict) and "data" in message else message
        if not isinstance(data, dict):
            raise MalformedFrameError("frame carries no event object")
        return parse_event(data, venue, receive_ts)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, MalformedFrameError):
            raise
        raise MalformedFrameError(str(exc)) from exc


def parse_event(data: Mapping[str, Any], venue: Venue, receive_ts: int) -> MarketEvent | None:
    kind = data.get("e")
    if kind == "aggTrade":
        # m = "the buyer is the market maker", so the taker was the seller.
        return Trade(
            venue=venue,
            symbol=data["s"],
            exchange_ts=int(data["T"]),
            receive_ts=receive_ts,
            price=float(data["p"]),
            quantity=float(data["q"]),
            side=SELL if data["m"] else BUY,
            trade_id=int(data["a"]),
        )
    if kind == "depthUpdate":
        pu = data.get("pu")
        return BookUpdate(
            venue=venue,
            symbol=data["s"],
            exchange_ts=int(data["E"]),
            receive_ts=receive_ts,
            first_update_id=int(data["U"]),
            last_update_id=int(data["u"]),
            prev_update_id=None if pu is None else int(pu),
            bids=_levels(data["b"]),
            asks=_levels(data["a"]),
        )
    if kind == "kline":
        return _parse_kline(data, venue, receive_ts)
    if kind == "forceOrder":
        order = data["o"]
        # The filled quantity at the average price is what actually traded; an unfilled notice falls
        # back to the order's own quantity and price.
        filled = float(order.get("z") or 0.0)
        return Liquidation(
            venue=venue,
            symbol=order["s"],
            exchange_ts=int(order.get("T") or data["E"]),
            receive_ts=receive_ts,
            price=float(order.get("ap") or order["p"]) if filled > 0 else float(order["p"]),
            quantity=filled if filled > 0 else float(order["q"]),
            side=SELL if order["S"] == "SELL" else BUY,
        )
    return None


def _parse_kline(data: Mapping[str, Any], venue: Venue, receive_ts: int) -> Kline:
    k = data["k"]
    return Kline(
        venue=venue,
        symbol=data["s"],
        exchange_ts=int(data["E"]),
        receive_ts=receive_ts,
        interval=k["i"],
        open_time=int(k["t"]),
        close_time=int(k["T"]),
        open=float(k["o"]),
        high=float(k["h"]),
        low=float(k["l"]),
        close=float(k["c"]),
        volume=float(k["v"]),
        buy_volume=float(k["V"]),
        trade_count=int(k["n"]),
        first_trade_id=int(k["f"]),
        last_trade_id=int(k["L"]),
        closed=bool(k["x"]),
    )


SERVER_SHUTDOWN: Final = "serverShutdown"


def is_server_shutdown(raw: bytes | str) -> bool:
    """Whether a frame is Binance's ``serverShutdown`` notice: the server is about to close the connection.

    The streams' documentation names the event without showing its frame, and the WebSocket API documents it as
    ``{"event": {"e": "serverShutdown", "E": …}}``; so the bare event, the combined-stream envelope (``data``) and
    the ``event`` wrapper are all recognised. Called only for frames :func:`parse_frame` did not turn into an event,
    so the hot path never parses twice.
    """
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(message, dict):
        return False
    for body in (message, message.get("data"), message.get("event")):
        if isinstance(body, dict) and body.get("e") == SERVER_SHUTDOWN:
            return True
    return False


def parse_depth_snapshot(body: bytes | str, venue: Venue, symbol: str, receive_ts: int) -> BookSnapshot:
    """Parse a ``/api/v3/depth`` or ``/fapi/v1/depth`` body (futures add ``E``/``T``; spot has no time)."""
    try:
        data = orjson.loads(body)
        return BookSnapshot(
            venue=venue,
            symbol=symbol.upper(),
            exchange_ts=int(data.get("E", receive_ts)),
            receive_ts=receive_ts,
            last_update_id=int(data["lastUpdateId"]),
            bids=_levels(data["bids"]),
            asks=_levels(data["asks"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedFrameError(f"bad depth snapshot: {exc}") from exc
