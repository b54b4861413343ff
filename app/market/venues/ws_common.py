"""Pieces shared by the Bybit and CoinAPI WebSocket connectors: the event sink type and feed statistics.

Kept apart from ``binance_client`` so the push-only venues do not depend on a REST-synchronised one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from app.market.events import MarketEvent

EventSink = Callable[[MarketEvent], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]

DEFAULT_RECORDED_DELAYS = 100


def _delays() -> deque[float]:
    return deque(maxlen=DEFAULT_RECORDED_DELAYS)


@dataclass(slots=True)
class FeedStats:
    """Counters a feed-status route can show; every collection here is bounded."""

    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    reconnects: int = 0  # backoff sleeps taken before a new connection attempt
    frames: int = 0
    malformed: int = 0
    ignored: int = 0  # valid frames for topics/symbols this connector does not use
    errors: int = 0
    last_frame_at: float | None = None  # monotonic clock
    last_error: str | None = None
    backoff_delays: deque[float] = field(default_factory=_delays)

    def record_error(self, message: str) -> None:
        self.errors += 1
        self.last_error = message[:500]  # bounded: a server may send arbitrarily long error text
