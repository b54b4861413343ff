"""The timer side of per-stream silence for the push-only connectors (Bybit, CoinAPI).

:class:`~app.market.silence.StreamSilence` is pure bookkeeping; a connector also needs something that wakes up when
a stream may have gone quiet. :meth:`StreamWatch.run` is that, as one task per connection, so the reader's only
per-frame cost is :meth:`~app.market.silence.StreamSilence.seen`: no clock check or timer re-arm per frame. It sleeps
until the next unreported deadline, but never longer than the shortest threshold — a stream seen again after being
reported (or watched afresh) becomes due one threshold later at the earliest, so that cap is what keeps a deadline
armed during a sleep from being overslept. The overdue streams go to the connector's remedy (a resubscribe, a
reconnect), which says whether to keep watching.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from app.market.silence import StreamSilence


@dataclass(frozen=True, slots=True)
class StaleStream:
    kind: str  # silence.BOOK / silence.TRADES
    symbol: str
    silent_s: float  # since its last frame, or since it was (re)subscribed


Remedy = Callable[[list[StaleStream]], Awaitable[bool]]  # returns False when the connection is going away


class StreamWatch(StreamSilence):
    """A connection's :class:`StreamSilence` plus the task body that checks it on time."""

    @property
    def enabled(self) -> bool:
        """Whether any kind has a threshold (otherwise there is nothing to run)."""
        return bool(self.thresholds)

    def watch_all(self, symbols: Iterable[str]) -> None:
        """Time every kind with a threshold for these symbols from now (a new connection or subscription)."""
        symbols = list(symbols)
        for kind in self.thresholds:
            self.watch(kind, symbols)

    def silent_for(self, kind: str, symbol: str) -> float:
        """Seconds since the stream's last frame (or since it was watched); 0 for one not watched."""
        last = self.last_seen(kind, symbol)
        return 0.0 if last is None else self._clock() - last

    async def run(self, remedy: Remedy) -> None:
        """Hand overdue streams to ``remedy`` until it returns False (or the task is cancelled with its
        connection). Only call when :attr:`enabled`."""
        cap_s = min(self.thresholds.values())
        while True:
            deadline = self.next_deadline()
            delay = cap_s if deadline is None else min(cap_s, deadline - self._clock())
            await asyncio.sleep(max(0.0, delay))
            due = self.overdue()
            if due and not await remedy(
                [StaleStream(kind, symbol, self.silent_for(kind, symbol)) for kind, symbol in due]
            ):
                return
