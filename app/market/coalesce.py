"""Trade coalescing: what the pipeline does with trades when its queue is full, so a burst never loses volume.

A run of consecutive trades of one symbol within one 1 m window becomes one :class:`TradeGroup`. Every timeframe
is a multiple of 1 m aligned in UTC, so all trades of a group fall in the same bar of every timeframe, and
applying the group to a bar gives what applying the trades one by one would:

- exact: open (first price), close (last price), high, low, trade count, and every per-price-bin footprint
  cell at the aggregator's tick;
- exact up to floating-point summation order (the same numbers added in a different grouping, relative error
  ~1e-16 per addition): volume, buy volume, sell volume, delta, Σ price·qty and therefore VWAP;
- lost: the individual trades' ids and times inside the group (the group keeps its first and last time).

Memory is bounded by ``max_groups`` groups and ``max_bins`` price bins in total; when either is reached
:meth:`Coalescer.add` refuses the trade and the caller must wait for queue space (backpressure).
"""

from __future__ import annotations

from collections import deque
from typing import Final

from app.market.aggregation import bin_index
from app.market.events import BUY, Trade, TradeGroup, Venue

WINDOW_MS: Final = 60_000


class _Accumulator:
    __slots__ = (
        "bins",
        "buy_volume",
        "close",
        "count",
        "first_ts",
        "high",
        "last_ts",
        "low",
        "open",
        "quote_volume",
        "receive_ts",
        "sell_volume",
        "symbol",
        "tick",
        "venue",
        "window",
    )

    def __init__(self, trade: Trade, tick: float, window: int) -> None:
        self.venue: Venue = trade.venue
        self.symbol = trade.symbol
        self.tick = tick
        self.window = window
        self.first_ts = self.last_ts = trade.exchange_ts
        self.receive_ts = trade.receive_ts
        self.open = self.high = self.low = self.close = trade.price
        self.count = 0
        self.buy_volume = self.sell_volume = self.quote_volume = 0.0
        self.bins: dict[int, list[float]] = {}

    def add(self, trade: Trade) -> bool:
        """Add a trade; True if it opened a new price bin."""
        price, qty = trade.price, trade.quantity
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self.close = price
        self.last_ts = trade.exchange_ts
        self.count += 1
        self.quote_volume += price * qty
        index = bin_index(price, self.tick)
        cell = self.bins.get(index)
        new = cell is None
        if cell is None:
            cell = self.bins[index] = [0.0, 0.0]
        if trade.side == BUY:
            self.buy_volume += qty
            cell[1] += qty
        else:
            self.sell_volume += qty
            cell[0] += qty
        return new

    def freeze(self) -> TradeGroup:
        return TradeGroup(
            venue=self.venue,
            symbol=self.symbol,
            first_ts=self.first_ts,
            last_ts=self.last_ts,
            receive_ts=self.receive_ts,
            open=self.open,
            high=self.high,
            low=self.low,
            close=self.close,
            count=self.count,
            buy_volume=self.buy_volume,
            sell_volume=self.sell_volume,
            quote_volume=self.quote_volume,
            tick=self.tick,
            bins=tuple((index, cell[0], cell[1]) for index, cell in sorted(self.bins.items())),
        )


class Coalescer:
    """Pending trade groups, oldest first; a trade merges into its symbol's newest group when in the same window."""

    def __init__(self, *, max_groups: int, max_bins: int) -> None:
        if max_groups < 1 or max_bins < 1:
            raise ValueError("max_groups and max_bins must be at least 1")
        self.max_groups = max_groups
        self.max_bins = max_bins
        self._groups: deque[_Accumulator] = deque()
        self._newest: dict[tuple[str, str], _Accumulator] = {}
        self._bins = 0
        self.trades = 0  # trades merged so far (a counter for feed status)

    def __len__(self) -> int:
        return len(self._groups)

    @property
    def bins(self) -> int:
        return self._bins

    def add(self, trade: Trade, tick: float) -> bool:
        """Merge ``trade``; False (and nothing changed) when a bound is reached: the caller must wait."""
        if self._bins >= self.max_bins:
            return False
        key = (trade.venue, trade.symbol)
        window = trade.exchange_ts - trade.exchange_ts % WINDOW_MS
        acc = self._newest.get(key)
        if acc is None or acc.window != window or acc.tick != tick:
            if len(self._groups) >= self.max_groups:
                return False
            acc = _Accumulator(trade, tick, window)
            self._groups.append(acc)
            self._newest[key] = acc
        if acc.add(trade):
            self._bins += 1
        self.trades += 1
        return True

    def pop(self) -> TradeGroup | None:
        """The oldest pending group, or None."""
        if not self._groups:
            return None
        acc = self._groups.popleft()
        self._bins -= len(acc.bins)
        key = (acc.venue, acc.symbol)
        if self._newest.get(key) is acc:
            del self._newest[key]
        return acc.freeze()
