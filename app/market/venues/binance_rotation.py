"""Make-before-break rotation of a Binance stream connection: on a ``serverShutdown`` notice, or before the venue's
24 h connection limit (``ConnectorLimits.max_connection_age_s``).

1. A second connection to the same combined-stream URL is opened while the first keeps being read and emitted.
2. :class:`Rotation` reads the new connection into a bounded buffer of parsed events, emitting nothing.
3. The connector keeps handling the old connection until it has *caught up* with the new one: for every symbol the
   new connection has delivered, the old one has applied the depth diff just before the new one's first diff (by
   update ids: ``U - 1``, or ``pu`` on futures) and emitted the aggTrade just before the new one's first aggTrade
   (aggTrade ids are consecutive per symbol). Everything the old connection could still deliver is then in the
   buffer too.
4. The switch: the buffering task stops (cancelling websockets' ``recv`` loses no frame), every book is re-bridged
   onto the new stream (no REST snapshot needed), the buffered events are handled in order as if read from the new
   connection — duplicates dropped by aggTrade id, by update id (stale diffs) and by liquidation time — the
   reader follows the new connection, and the old one is closed.

The old connection closing first (the server went before the catch-up) switches at once: what it did not deliver
was never going to arrive. No catch-up within the rotation timeout, or a full buffer, switches anyway (counted as
``rotations_forced``: a book that does not bridge resyncs by its update ids; trades between the two positions
could be missing). A new connection that cannot be opened leaves the old one in charge until the server closes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from app.market.events import BookUpdate, MarketEvent, Trade
from app.market.venues.binance_sync import BookSynchroniser, SyncState

Parse = Callable[[str | bytes], MarketEvent | None]


class Rotation:
    """The new connection of a switch in progress and what it delivered so far (at most ``max_events``)."""

    def __init__(self, ws: ClientConnection, parse: Parse, *, max_events: int, deadline: float) -> None:
        self.ws = ws
        self.deadline = deadline  # monotonic time past which the switch happens whether caught up or not
        self.max_events = max_events
        self.events: list[MarketEvent] = []
        self.frames = 0
        self.first_trade: dict[str, int] = {}
        self.first_diff: dict[str, BookUpdate] = {}
        self.full = False
        self.closed = False  # the new connection itself ended before the switch
        self._task = asyncio.create_task(self._read(parse), name="binance-rotation-reader")

    async def _read(self, parse: Parse) -> None:
        try:
            while len(self.events) < self.max_events:
                raw = await self.ws.recv()
                self.frames += 1
                event = parse(raw)
                if event is None:
                    continue
                self.events.append(event)
                if isinstance(event, Trade):
                    self.first_trade.setdefault(event.symbol, event.trade_id)
                elif isinstance(event, BookUpdate):
                    self.first_diff.setdefault(event.symbol, event)
            self.full = True
        except ConnectionClosed:
            self.closed = True

    def caught_up(self, last_trade_ids: Mapping[str, int], syncs: Mapping[str, BookSynchroniser]) -> bool:
        """Whether the old connection has delivered everything up to where the new one's data begins."""
        if self.full:
            return True
        if not self.first_trade and not self.first_diff:
            return False  # nothing to compare yet: the new subscription may not be live
        for symbol, first in self.first_trade.items():
            if last_trade_ids.get(symbol, first - 2) < first - 1:
                return False
        for symbol, diff in self.first_diff.items():
            sync = syncs.get(symbol)
            if sync is None or sync.state is not SyncState.SYNCED:
                continue  # not in sync on the old stream either: it resyncs on the new one
            before = diff.prev_update_id if diff.prev_update_id is not None else diff.first_update_id - 1
            if sync.last_applied < before:
                return False
        return True

    async def stop_reading(self) -> None:
        """Stop buffering; the connection stays open for the connector's reader."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def abandon(self) -> None:
        """Give the switch up: stop reading and close the new connection."""
        await self.stop_reading()
        await self.ws.close()
