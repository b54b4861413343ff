"""Recent Binance depth snapshots, one per symbol, reusable by a resync for ``ConnectorLimits.snapshot_cache_s``.

Every snapshot the connector fetches (a resync's, a silence probe's) is kept here, replacing the symbol's previous
one, so the cache holds at most one per subscribed symbol. A resync takes the cached one instead of asking REST
only while it is younger than the TTL *and* :meth:`BookSynchroniser.can_bridge` says it continues the buffered diffs.

Why hits are rare in steady state: a resync follows a reconnect or a gap, and the diff it has to bridge — the first
one buffered after the reconnect, or the one past the gap — is newer than any snapshot fetched before that event,
by definition of "after". A snapshot older than the first buffered diff can never bridge it, so the usual
resync misses and goes to REST, as it must.

Where hits come from:

* the in-place resync after a silence probe found a book stale: the probe's own snapshot, fetched milliseconds
  earlier, is exactly the state to resync to (no second request for the same symbol);
* back-to-back resyncs within the TTL while the cached snapshot is still ahead of the buffer — a reconnect while a
  quiet symbol's book has not moved since its last snapshot (its first new diff continues that snapshot), or a
  resync right after one whose snapshot overtook the stream.

No invalidation on reconnect: update ids belong to the venue's book, not to a connection (per symbol on spot,
shared across symbols on futures), so a snapshot's ``lastUpdateId`` means the same on every connection. The
bridging check proves continuity by those ids — the snapshot plus the diffs from the first one it bridges
are the venue's full history, whichever connection carried them — which is the same proof a fresh REST snapshot
gets. A snapshot that predates something the new connection missed fails it and is simply not used. The TTL only
bounds how old a book the sink may be shown while the first live diff after an unbuffered resync is awaited.
"""

from __future__ import annotations

import time

from app.market.events import BookSnapshot
from app.market.recovery import Clock
from app.market.venues.binance_sync import BookSynchroniser


class SnapshotCache:
    """The last snapshot fetched per symbol and when; ``ttl_s`` of 0 (or less) turns reuse off."""

    def __init__(self, ttl_s: float, clock: Clock = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[str, tuple[float, BookSnapshot]] = {}

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, snapshot: BookSnapshot) -> None:
        """Keep a freshly fetched snapshot (replacing the symbol's previous one)."""
        if self.enabled:
            self._entries[snapshot.symbol] = (self._clock(), snapshot)

    def usable(self, sync: BookSynchroniser) -> BookSnapshot | None:
        """The symbol's cached snapshot if it is younger than the TTL and bridges ``sync``'s buffered diffs.

        The entry stays after use: a second resync within the TTL may still be bridged by it (and is checked again).
        """
        entry = self._entries.get(sync.symbol)
        if entry is None:
            return None
        fetched_at, snapshot = entry
        if self._clock() - fetched_at >= self.ttl_s:
            del self._entries[sync.symbol]  # expired: nothing younger will appear without a new fetch
            return None
        return snapshot if sync.can_bridge(snapshot.last_update_id) else None
