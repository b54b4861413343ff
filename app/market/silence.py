"""Per-stream silence: which of a connection's streams (one symbol's book, its trades …) has gone quiet.

A connection-level silence timeout cannot see one stream stopping while the others flow: a Binance connection
carrying a symbol's ``kline_1m`` updates (pushed every 2 s) or a Bybit connection answering its own pings stays
"alive" even when the symbol's depth diffs stop arriving. Each connector therefore notes when it last saw a frame
of each (stream, symbol) and asks :meth:`StreamSilence.overdue` for the ones past their kind's threshold; what it
does about one (a REST check, a resubscribe, a reconnect) is the venue's business.

Pure bookkeeping with an injectable clock: no I/O, no tasks. A kind without a threshold (``None`` or ``0``) is
never reported — a quiet market legitimately goes minutes without a trade.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Final

from app.market.recovery import Clock

BOOK: Final = "book"
TRADES: Final = "trades"

StreamKey = tuple[str, str]  # (kind, symbol)


class StreamSilence:
    """Last-seen times of a connection's streams; a stream is reported once per silence, not on every check."""

    def __init__(self, thresholds: Mapping[str, float | None], clock: Clock = time.monotonic) -> None:
        self.thresholds = {kind: float(t) for kind, t in thresholds.items() if t}
        self._clock = clock
        self._last: dict[StreamKey, float] = {}
        # Timers restarted by rearm() without a frame: the deadline runs from here while _last keeps the last
        # sighting (kept apart so seen(), the per-frame call, stays a single store).
        self._armed: dict[StreamKey, float] = {}
        self._reported: set[StreamKey] = set()
        self.stale_reports = 0  # streams reported overdue since creation (for the feed status)

    def watch(self, kind: str, symbols: Iterable[str]) -> None:
        """Start timing ``kind`` for these symbols from now (a new connection, a resubscribe)."""
        if kind not in self.thresholds:
            return
        now = self._clock()
        for symbol in symbols:
            key = (kind, symbol)
            self._last[key] = now
            self._armed.pop(key, None)
            self._reported.discard(key)

    def rearm(self, kind: str, symbol: str) -> None:
        """Time a watched stream again from now *without* counting it as seen: :meth:`last_seen` keeps its last
        frame's time, so the caller can still tell whether a frame has arrived since (a stream checked and found
        merely quiet is looked at again one threshold later)."""
        key = (kind, symbol)
        if key in self._last:
            self._armed[key] = self._clock()
            self._reported.discard(key)

    def last_seen(self, kind: str, symbol: str) -> float | None:
        """When this stream's last frame arrived (or its watch started); None if it is not watched. Any frame
        after a comparison point changes it, which is how a caller detects "a frame arrived meanwhile"."""
        return self._last.get((kind, symbol))

    def seen(self, kind: str, symbol: str) -> None:
        """A frame of this stream arrived (called per frame: one dict store, no allocation for watched keys)."""
        key = (kind, symbol)
        if key in self._last:
            self._last[key] = self._clock()
            if self._reported:
                self._reported.discard(key)

    def overdue(self) -> list[StreamKey]:
        """Streams silent past their threshold and not yet reported; each is reported once until it is seen again
        or watched afresh."""
        now = self._clock()
        due: list[StreamKey] = []
        for key, last in self._last.items():
            if key not in self._reported and now - self._since(key, last) >= self.thresholds[key[0]]:
                due.append(key)
                self._reported.add(key)
        self.stale_reports += len(due)
        return due

    def next_deadline(self) -> float | None:
        """The clock time at which the next unreported stream becomes overdue (for a reader's wake-up timer)."""
        deadlines = [
            self._since(key, last) + self.thresholds[key[0]]
            for key, last in self._last.items()
            if key not in self._reported
        ]
        return min(deadlines, default=None)

    def _since(self, key: StreamKey, last: float) -> float:
        """Where the stream's timer runs from: its last frame, or a later rearm()."""
        if self._armed:
            armed = self._armed.get(key)
            if armed is not None and armed > last:
                return armed
        return last

    def clear(self) -> None:
        """Forget every stream (the connection ended)."""
        self._last.clear()
        self._armed.clear()
        self._reported.clear()
