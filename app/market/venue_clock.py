"""The venue's clock, as far as this host can prove it: the one clock every "is this window over?" decision asks.

A host's clock can lag or lead the venue's by seconds (a real capture shows venue event times up to ~2.8 s ahead of
the recording host's receive times). Deciding by our own clock then loses bars both ways: lagging, a closed kline is
dropped as "still forming"; leading, the venue's forming bar is taken as closed and, closed bars being immutable,
kept for good. So a feed's bars close, its REST klines are judged closed or forming, and its repairs fall due by the
venue's time: ``host clock + offset``.

The offset is a lower bound built from venue timestamps we hold: a stream event's time or the venue's server time
was stamped before we read it, so ``venue time - our time when reading it`` is at most the true offset (by the
transit time). Erring low errs towards "not over yet": a bar closes a few ms later, a closed kline is asked for
again; a forming one is never taken as closed. The largest observation of the current and the previous period is
used, so one made before our clock stepped forward ages out within two periods; a period without observations
(a quiet stream) keeps the last ones.
"""

from __future__ import annotations

from collections.abc import Callable

HostClock = Callable[[], int]  # epoch ms of this host (injectable: tests run a fast virtual market)


class VenueClock:
    def __init__(self, host: HostClock, *, period_ms: int) -> None:
        if period_ms <= 0:
            raise ValueError("period_ms must be positive")
        self._host = host
        self.period_ms = period_ms
        self._period_start: int | None = None
        self._current: int | None = None  # the largest offset observed in the current period
        self._previous: int | None = None  # … in the last period that observed any

    @property
    def offset_ms(self) -> int | None:
        """The venue's clock minus ours (negative: the venue is behind), a lower bound; None before any
        observation, when the venue's time is taken to be ours."""
        current, previous = self._current, self._previous
        if current is None or previous is None:
            return previous if current is None else current
        return max(current, previous)

    def now(self) -> int:
        """The venue's time (epoch ms): it has reached at least this."""
        host = self._host()
        self._roll(host)
        return host + (self.offset_ms or 0)

    def saw(self, venue_ms: int) -> None:
        """The venue stamped ``venue_ms`` (an event time, its server time) and we hold it now."""
        host = self._host()
        self._roll(host)
        offset = venue_ms - host
        if self._current is None or offset > self._current:
            self._current = offset

    def _roll(self, host: int) -> None:
        start = self._period_start
        if start is not None and start <= host < start + self.period_ms:
            return
        if self._current is not None:
            self._previous, self._current = self._current, None
        self._period_start = host
