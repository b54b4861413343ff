"""A bounded L2 order book: price → quantity per side, kept sorted for cheap top-of-book reads.

Prices are kept in ascending lists maintained with ``bisect``: books hold at most a few thousand levels, where
an O(n) ``list.insert`` (a memmove) beats a balanced tree written in Python, and top-N reads are slices.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from dataclasses import dataclass

from app.market.events import BookSnapshot, BookUpdate, Level

DEFAULT_MAX_LEVELS = 5000


@dataclass(frozen=True, slots=True)
class TopOfBook:
    """The best ``depth`` levels of each side, best first, with derived measures.

    ``imbalance`` is (bid qty - ask qty) / (bid qty + ask qty) over those levels, in [-1, 1]; positive means
    more resting size on the bid.
    """

    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    best_bid: float | None
    best_ask: float | None
    spread: float | None
    mid: float | None
    imbalance: float | None


class OrderBook:
    """Bids and asks as price → quantity, bounded to ``max_levels`` per side.

    When a side grows past the bound the levels furthest from the touch are dropped: they matter least, and a
    later diff that touches one re-creates it with its absolute quantity.
    """

    __slots__ = ("_ask_prices", "_asks", "_bid_prices", "_bids", "last_update_id", "max_levels")

    def __init__(self, max_levels: int = DEFAULT_MAX_LEVELS) -> None:
        if max_levels < 1:
            raise ValueError("max_levels must be at least 1")
        self.max_levels = max_levels
        self._bids: dict[float, float] = {}
        self._asks: dict[float, float] = {}
        # Ascending in both cases: the best bid is the last element, the best ask the first.
        self._bid_prices: list[float] = []
        self._ask_prices: list[float] = []
        self.last_update_id = 0

    def __len__(self) -> int:
        return len(self._bids) + len(self._asks)

    def clear(self) -> None:
        self._bids.clear()
        self._asks.clear()
        self._bid_prices.clear()
        self._ask_prices.clear()
        self.last_update_id = 0

    def apply_snapshot(self, snapshot: BookSnapshot) -> None:
        self.clear()
        self._set_levels(snapshot.bids, snapshot.asks)
        self.last_update_id = snapshot.last_update_id

    def apply_update(self, update: BookUpdate) -> None:
        self._set_levels(update.bids, update.asks)
        self.last_update_id = update.last_update_id

    def set_levels(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Apply absolute quantities; a quantity of 0 removes the level."""
        self._set_levels(bids, asks)

    def _set_levels(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        for price, qty in bids:
            self._set(self._bids, self._bid_prices, price, qty)
        for price, qty in asks:
            self._set(self._asks, self._ask_prices, price, qty)
        self._trim()

    @staticmethod
    def _set(levels: dict[float, float], prices: list[float], price: float, qty: float) -> None:
        if qty <= 0.0:
            if levels.pop(price, None) is not None:
                del prices[bisect_left(prices, price)]
            return
        if price not in levels:
            insort(prices, price)
        levels[price] = qty

    def _trim(self) -> None:
        excess = len(self._bid_prices) - self.max_levels
        if excess > 0:
            for price in self._bid_prices[:excess]:
                del self._bids[price]
            del self._bid_prices[:excess]
        excess = len(self._ask_prices) - self.max_levels
        if excess > 0:
            for price in self._ask_prices[-excess:]:
                del self._asks[price]
            del self._ask_prices[-excess:]

    @property
    def best_bid(self) -> float | None:
        return self._bid_prices[-1] if self._bid_prices else None

    @property
    def best_ask(self) -> float | None:
        return self._ask_prices[0] if self._ask_prices else None

    @property
    def is_crossed(self) -> bool:
        """True when the best bid is at or above the best ask: a consistent book never is."""
        bid, ask = self.best_bid, self.best_ask
        return bid is not None and ask is not None and bid >= ask

    def bids(self, depth: int | None = None) -> list[Level]:
        """Bid levels, best (highest) first."""
        prices = self._bid_prices if depth is None else self._bid_prices[-depth:] if depth > 0 else []
        return [(p, self._bids[p]) for p in reversed(prices)]

    def asks(self, depth: int | None = None) -> list[Level]:
        """Ask levels, best (lowest) first."""
        prices = self._ask_prices if depth is None else self._ask_prices[: max(depth, 0)]
        return [(p, self._asks[p]) for p in prices]

    def top(self, depth: int = 10) -> TopOfBook:
        bids = tuple(self.bids(depth))
        asks = tuple(self.asks(depth))
        best_bid = bids[0][0] if bids else None
        best_ask = asks[0][0] if asks else None
        spread = mid = None
        if best_bid is not None and best_ask is not None:
            spread = best_ask - best_bid
            mid = (best_ask + best_bid) / 2.0
        bid_qty = sum(q for _, q in bids)
        ask_qty = sum(q for _, q in asks)
        total = bid_qty + ask_qty
        imbalance = (bid_qty - ask_qty) / total if total > 0 else None
        return TopOfBook(bids, asks, best_bid, best_ask, spread, mid, imbalance)
