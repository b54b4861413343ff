"""Binance's documented procedure for keeping a local book in sync with depth diffs — pure, no I/O.

Spot (``/api/v3/depth``): buffer diffs, fetch a snapshot, drop diffs with ``u <= lastUpdateId``; the first
applied diff must satisfy ``U <= lastUpdateId + 1 <= u``; afterwards each diff's ``U`` is the previous
``u + 1``.

USDⓈ-M futures (``/fapi/v1/depth``): drop diffs with ``u < lastUpdateId``; the first applied diff must
satisfy ``U <= lastUpdateId <= u`` — or ``pu <= lastUpdateId <= u``, because update ids are shared across
symbols, so a symbol's next diff can start (``U``) past the snapshot while nothing happened to *this* symbol
between ``pu`` and ``U``; afterwards each diff's ``pu`` equals the previous ``u``.

Any break in continuity is a gap: the book is no longer trusted, the synchroniser asks for a new snapshot,
and the diffs from the gap on are kept as the new buffer (a newer snapshot can bridge them). The buffer is
bounded; an overflow (the snapshot is taking too long) also forces a resync rather than growing without limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from app.market.book import DEFAULT_MAX_LEVELS, OrderBook
from app.market.events import BookSnapshot, BookUpdate
from app.market.venues.binance import Market

DEFAULT_MAX_BUFFERED_DIFFS = 1000


class SyncState(Enum):
    AWAITING_SNAPSHOT = "awaiting_snapshot"  # buffering diffs; the caller must fetch a snapshot
    AWAITING_BRIDGE = "awaiting_bridge"  # snapshot applied; waiting for the diff that continues it
    SYNCED = "synced"


class DiffResult(Enum):
    BUFFERED = "buffered"
    STALE = "stale"  # already contained in the snapshot (or a duplicate): dropped
    APPLIED = "applied"
    GAP = "gap"  # continuity broken: resync needed
    OVERFLOW = "overflow"  # pre-snapshot buffer full: resync needed


@dataclass(slots=True)
class SyncStats:
    applied: int = 0
    stale: int = 0
    gaps: int = 0
    overflows: int = 0
    snapshots: int = 0
    crossed: int = 0

    @property
    def resyncs(self) -> int:
        return self.gaps + self.overflows


class BookSynchroniser:
    """Keeps one symbol's ``OrderBook`` consistent with its diff stream.

    The caller feeds every diff to :meth:`on_diff` and, whenever :attr:`needs_snapshot` is true, fetches a
    REST snapshot and hands it to :meth:`on_snapshot`.
    """

    def __init__(
        self,
        market: Market,
        symbol: str,
        *,
        max_buffered_diffs: int = DEFAULT_MAX_BUFFERED_DIFFS,
        max_levels: int = DEFAULT_MAX_LEVELS,
    ) -> None:
        if max_buffered_diffs < 1:
            raise ValueError("max_buffered_diffs must be at least 1")
        self.market = market
        self.symbol = symbol
        self.max_buffered_diffs = max_buffered_diffs
        self.book = OrderBook(max_levels)
        self.state = SyncState.AWAITING_SNAPSHOT
        self.stats = SyncStats()
        self._buffer: list[BookUpdate] = []
        self._last_u = 0  # snapshot lastUpdateId until the bridge, then the last applied diff's u
        self._rebridging = False  # bridging to the last applied diff (not a snapshot): u == last is a duplicate

    @property
    def needs_snapshot(self) -> bool:
        return self.state is SyncState.AWAITING_SNAPSHOT

    @property
    def last_applied(self) -> int:
        """The snapshot's lastUpdateId until the bridge, then the last applied diff's ``u``."""
        return self._last_u

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def on_diff(self, update: BookUpdate) -> DiffResult:
        if self.state is SyncState.AWAITING_SNAPSHOT:
            if len(self._buffer) >= self.max_buffered_diffs:
                # Start the buffer afresh with this diff: whichever snapshot arrives next either bridges it or
                # is older, which the bridge check then reports as a gap.
                self._buffer = [update]
                self.stats.overflows += 1
                return DiffResult.OVERFLOW
            self._buffer.append(update)
            return DiffResult.BUFFERED
        result = self._accept(update)
        if result is DiffResult.GAP:
            self._resync([update])
        return result

    def on_snapshot(self, snapshot: BookSnapshot) -> list[BookUpdate]:
        """Apply a snapshot and every buffered diff that continues it; returns the diffs applied.

        A snapshot that arrives when none is awaited (a late duplicate) is ignored.
        """
        if self.state is not SyncState.AWAITING_SNAPSHOT:
            return []
        self.stats.snapshots += 1
        self.book.apply_snapshot(snapshot)
        self._last_u = snapshot.last_update_id
        self.state = SyncState.AWAITING_BRIDGE
        self._rebridging = False
        buffered, self._buffer = self._buffer, []
        applied: list[BookUpdate] = []
        for index, update in enumerate(buffered):
            result = self._accept(update)
            if result is DiffResult.APPLIED:
                applied.append(update)
            elif result is DiffResult.GAP:
                self._resync(buffered[index:])
                break
        return applied

    def can_bridge(self, last_update_id: int) -> bool:
        """Whether a snapshot with this ``lastUpdateId``, handed to :meth:`on_snapshot` now, would continue the
        buffered diffs — the test a *cached* snapshot must pass before it replaces a REST request.

        The rule is :meth:`on_snapshot`'s own, applied ahead of time. Buffered diffs the snapshot already contains
        are skipped (spot ``u <= lastUpdateId``; futures ``u < lastUpdateId``); the first diff left must bridge
        it (spot ``U <= lastUpdateId + 1``; futures ``U <= lastUpdateId`` or ``pu <= lastUpdateId``). A snapshot
        older than that diff cannot be bridged: the updates between them were never seen.

        No diff left — an empty buffer, or a snapshot newer than every buffered diff — is accepted: there is
        nothing to bridge *yet*, exactly as with a REST snapshot that overtook the stream. The book then awaits
        its bridge and the first live diff is held to the same rule; one that does not continue the snapshot is
        a gap, sent back to REST. (A resync task starts on a diff it buffers, so the buffer is empty only for the
        in-place resync after a probe, whose snapshot is milliseconds old.) Only a book awaiting a snapshot can
        use one: otherwise :meth:`on_snapshot` would ignore it, and this says False.
        """
        if self.state is not SyncState.AWAITING_SNAPSHOT:
            return False
        futures = self.market == "futures"
        for update in self._buffer:
            u = update.last_update_id
            if u < last_update_id or (u == last_update_id and not futures):
                continue  # contained in the snapshot: on_snapshot drops it as stale
            if futures:
                prev = update.prev_update_id
                return update.first_update_id <= last_update_id or (prev is not None and prev <= last_update_id)
            return update.first_update_id <= last_update_id + 1
        return True

    def reset(self) -> None:
        """Forget everything (a new connection): the next diff starts a fresh buffer."""
        self.book.clear()
        self._buffer = []
        self._last_u = 0
        self.state = SyncState.AWAITING_SNAPSHOT
        self._rebridging = False

    def rebridge(self) -> None:
        """A second connection takes over the diff stream (make-before-break): keep the book and its last update
        id, and accept the new stream's first diff by the bridging rule (it may overlap what was applied:
        levels are absolute quantities, so re-applying an overlap is harmless); diffs up to the last applied id
        are duplicates and dropped. A book still awaiting its snapshot keeps waiting (buffering)."""
        if self.state is SyncState.SYNCED:
            self.state = SyncState.AWAITING_BRIDGE
            self._rebridging = True

    def _resync(self, keep: list[BookUpdate]) -> None:
        self.stats.gaps += 1
        self.state = SyncState.AWAITING_SNAPSHOT
        self._rebridging = False
        self._buffer = keep[-self.max_buffered_diffs :]

    def _accept(self, update: BookUpdate) -> DiffResult:
        last = self._last_u
        u, first, prev = update.last_update_id, update.first_update_id, update.prev_update_id
        futures = self.market == "futures"
        if self.state is SyncState.AWAITING_BRIDGE:
            if u < last or (u == last and (self._rebridging or not futures)):
                self.stats.stale += 1
                return DiffResult.STALE
            # Futures: the documented U-rule, or the pu-rule for ids shared across symbols.
            ok = (first <= last or (prev is not None and prev <= last)) if futures else first <= last + 1
        else:
            if u <= last:
                self.stats.stale += 1
                return DiffResult.STALE
            ok = prev == last if futures else first == last + 1
        if not ok:
            return DiffResult.GAP
        self.book.apply_update(update)
        self._last_u = u
        self.state = SyncState.SYNCED
        self._rebridging = False
        self.stats.applied += 1
        if self.book.is_crossed:
            self.stats.crossed += 1
        return DiffResult.APPLIED
