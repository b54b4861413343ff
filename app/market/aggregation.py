"""Trades → time bars (1 m … 1 d, UTC aligned) with buy/sell volume, VWAP, footprint and liquidations.

Each timeframe is built directly from the trades (six dict updates per trade are cheaper than re-folding
1 m bars on every read) and :func:`rollup` folds finished 1 m bars into a higher timeframe (REST backfill);
the two agree, which the tests check. Windows with no trade produce no bar.

Closed bars are frozen dataclasses and never change. A trade older than the forming bar ("late": out of
order across a reconnect, or after :meth:`BarAggregator.advance` closed its window) is added to the forming
bar rather than dropped, so no volume is ever lost; ``late_trades`` counts them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from app.market.events import BUY, Liquidation, Trade, TradeGroup

TIMEFRAMES: Final[dict[str, int]] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}
DEFAULT_MAX_BARS = 5000
DEFAULT_MAX_FOOTPRINT_LEVELS = 1000
# Absorbs float error in price/tick (7.611 / 0.001 == 7610.999…) without moving a price across a bin edge.
_BIN_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class FootprintLevel:
    """Volume traded in one price bin: ``bid_volume`` hit the bid (taker sells), ``ask_volume`` lifted
    the ask (taker buys)."""

    price: float
    bid_volume: float
    ask_volume: float


@dataclass(frozen=True, slots=True)
class Bar:
    timeframe: str
    open_time: int  # epoch ms, aligned to the timeframe in UTC
    open: float
    high: float
    low: float
    close: float
    volume: float
    buy_volume: float  # taker buys
    sell_volume: float  # taker sells
    quote_volume: float  # Σ price·qty, kept so VWAP survives rollups exactly
    trade_count: int
    long_liquidations: float  # quantity of longs force-closed (forced sells)
    short_liquidations: float
    closed: bool
    footprint: tuple[FootprintLevel, ...]  # ascending price
    footprint_tick: float  # bin width; doubles whenever a bar exceeds its footprint level bound

    @property
    def close_time(self) -> int:
        return self.open_time + TIMEFRAMES[self.timeframe]

    @property
    def delta(self) -> float:
        return self.buy_volume - self.sell_volume

    @property
    def vwap(self) -> float:
        return self.quote_volume / self.volume if self.volume > 0 else self.close


def bin_index(price: float, tick: float) -> int:
    """floor(price / tick) as an integer bin (the bin's price is index·tick)."""
    return math.floor(price / tick + _BIN_EPSILON)


class _BarBuilder:
    """The forming bar: mutable until frozen into a :class:`Bar`."""

    __slots__ = (
        "buy_volume",
        "close",
        "footprint",
        "high",
        "long_liq",
        "low",
        "max_levels",
        "open",
        "open_time",
        "quote_volume",
        "sell_volume",
        "shift",
        "short_liq",
        "tick",
        "timeframe",
        "trade_count",
    )

    def __init__(self, timeframe: str, open_time: int, price: float, tick: float, max_levels: int) -> None:
        self.timeframe = timeframe
        self.open_time = open_time
        self.open = self.high = self.low = self.close = price
        self.buy_volume = self.sell_volume = self.quote_volume = 0.0
        self.long_liq = self.short_liq = 0.0
        self.trade_count = 0
        self.tick = tick
        self.max_levels = max_levels
        self.shift = 0  # effective bin width is tick · 2**shift
        # Keyed by integer bin index so float keys never split one price into two bins.
        self.footprint: dict[int, list[float]] = {}

    def add_trade(self, price: float, quantity: float, buy: bool) -> None:
        if self.trade_count == 0:
            # A bar opened by a liquidation carries a placeholder price until its first trade.
            self.open = self.high = self.low = price
        elif price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self.close = price
        self.trade_count += 1
        self.quote_volume += price * quantity
        if buy:
            self.buy_volume += quantity
        else:
            self.sell_volume += quantity
        index = bin_index(price, self.tick)
        self._add_level(index, 0.0 if buy else quantity, quantity if buy else 0.0)

    def add_group(self, group: TradeGroup) -> None:
        """Apply coalesced trades: the same result as their trades one by one (up to float summation order)."""
        if self.trade_count == 0:
            self.open, self.high, self.low = group.open, group.high, group.low
        else:
            self.high = max(self.high, group.high)
            self.low = min(self.low, group.low)
        self.close = group.close
        self.trade_count += group.count
        self.quote_volume += group.quote_volume
        self.buy_volume += group.buy_volume
        self.sell_volume += group.sell_volume
        # The coalescer bins at the aggregator's base tick, so a group's bin is one of ours.
        for index, bid, ask in group.bins:
            self._add_level(index, bid, ask)

    def _add_level(self, base_index: int, bid: float, ask: float) -> None:
        key = base_index >> self.shift
        level = self.footprint.get(key)
        if level is None:
            self.footprint[key] = [bid, ask]
            if len(self.footprint) > self.max_levels:
                self._coarsen()
        else:
            level[0] += bid
            level[1] += ask

    def _coarsen(self) -> None:
        # Halve the resolution instead of dropping levels: memory stays bounded and volume is conserved.
        while len(self.footprint) > self.max_levels:
            self.shift += 1
            merged: dict[int, list[float]] = {}
            for key, (bid, ask) in self.footprint.items():
                level = merged.setdefault(key >> 1, [0.0, 0.0])
                level[0] += bid
                level[1] += ask
            self.footprint = merged

    def merge(self, bar: Bar) -> None:
        """Fold a finished lower-timeframe bar into this one (bars arrive oldest first)."""
        if bar.trade_count:
            if self.trade_count == 0:
                self.open, self.high, self.low = bar.open, bar.high, bar.low
            else:
                self.high = max(self.high, bar.high)
                self.low = min(self.low, bar.low)
            self.close = bar.close
        self.trade_count += bar.trade_count
        self.buy_volume += bar.buy_volume
        self.sell_volume += bar.sell_volume
        self.quote_volume += bar.quote_volume
        self.long_liq += bar.long_liquidations
        self.short_liq += bar.short_liquidations
        shift = round(math.log2(bar.footprint_tick / self.tick))
        for level in bar.footprint:
            index = round(level.price / bar.footprint_tick) << shift
            self._add_level(index, level.bid_volume, level.ask_volume)

    def freeze(self, closed: bool) -> Bar:
        width = self.tick * (1 << self.shift)
        levels = sorted(self.footprint.items())
        footprint = tuple(FootprintLevel(round(key * width, 12), bid, ask) for key, (bid, ask) in levels)
        return Bar(
            timeframe=self.timeframe,
            open_time=self.open_time,
            open=self.open,
            high=self.high,
            low=self.low,
            close=self.close,
            volume=self.buy_volume + self.sell_volume,
            buy_volume=self.buy_volume,
            sell_volume=self.sell_volume,
            quote_volume=self.quote_volume,
            trade_count=self.trade_count,
            long_liquidations=self.long_liq,
            short_liquidations=self.short_liq,
            closed=closed,
            footprint=footprint,
            footprint_tick=width,
        )


class _Series:
    """One timeframe: bounded closed bars plus the forming one."""

    __slots__ = ("closed", "forming", "last_close", "next_open", "on_close", "timeframe", "width")

    def __init__(self, timeframe: str, max_bars: int, on_close: Callable[[Bar], None] | None) -> None:
        self.timeframe = timeframe
        self.on_close = on_close
        self.width = TIMEFRAMES[timeframe]
        self.closed: deque[Bar] = deque(maxlen=max_bars)
        self.forming: _BarBuilder | None = None
        self.next_open = 0  # the earliest window a new bar may open (after the last closed one)
        self.last_close: float | None = None

    def close_forming(self) -> None:
        if self.forming is not None:
            bar = self.forming.freeze(closed=True)
            self.closed.append(bar)
            if self.on_close is not None:
                self.on_close(bar)
            self.last_close = self.forming.close
            self.next_open = self.forming.open_time + self.width
            self.forming = None


class BarAggregator:
    """Bars for one (venue, symbol) across ``timeframes``, each holding at most ``max_bars`` closed bars.

    ``on_close`` is called with every bar as it closes (the pipeline's writer stores it), so a caller that
    persists bars elsewhere can keep ``max_bars`` small.
    """

    def __init__(
        self,
        *,
        tick_size: float,
        timeframes: Sequence[str] = tuple(TIMEFRAMES),
        max_bars: int = DEFAULT_MAX_BARS,
        max_footprint_levels: int = DEFAULT_MAX_FOOTPRINT_LEVELS,
        on_close: Callable[[Bar], None] | None = None,
    ) -> None:
        if tick_size <= 0:
            raise ValueError("tick_size must be positive")
        unknown = set(timeframes) - TIMEFRAMES.keys()
        if unknown:
            raise ValueError(f"unknown timeframes {sorted(unknown)}; valid: {list(TIMEFRAMES)}")
        if max_bars < 1 or max_footprint_levels < 1:
            raise ValueError("max_bars and max_footprint_levels must be at least 1")
        self.tick_size = tick_size
        self.max_footprint_levels = max_footprint_levels
        self._series = {tf: _Series(tf, max_bars, on_close) for tf in timeframes}
        self.late_trades = 0
        self.late_liquidations = 0

    @property
    def timeframes(self) -> list[str]:
        return list(self._series)

    def _builder_for(self, series: _Series, ts: int, price: float) -> tuple[_BarBuilder, bool]:
        """The bar an event at ``ts`` belongs to, opening one when needed; the flag says it was late."""
        window = ts - ts % series.width
        forming = series.forming
        if forming is not None and window <= forming.open_time:
            return forming, window < forming.open_time
        if forming is not None:
            series.close_forming()
        late = window < series.next_open
        open_time = series.next_open if late else window
        seed = series.last_close if series.last_close is not None else price
        series.forming = _BarBuilder(series.timeframe, open_time, seed, self.tick_size, self.max_footprint_levels)
        return series.forming, late

    def add_trade(self, trade: Trade) -> None:
        buy = trade.side == BUY
        late = False
        for series in self._series.values():
            builder, was_late = self._builder_for(series, trade.exchange_ts, trade.price)
            builder.add_trade(trade.price, trade.quantity, buy)
            late = late or was_late
        self.late_trades += late

    def add_group(self, group: TradeGroup) -> None:
        if group.tick != self.tick_size:
            raise ValueError(f"group binned at tick {group.tick}, aggregator at {self.tick_size}")
        late = False
        for series in self._series.values():
            builder, was_late = self._builder_for(series, group.first_ts, group.open)
            builder.add_group(group)
            late = late or was_late
        self.late_trades += group.count if late else 0

    def add_trades(self, trades: Iterable[Trade]) -> None:
        for trade in trades:
            self.add_trade(trade)

    def add_liquidation(self, liquidation: Liquidation) -> None:
        late = False
        for series in self._series.values():
            builder, was_late = self._builder_for(series, liquidation.exchange_ts, liquidation.price)
            if liquidation.is_long_liquidation:
                builder.long_liq += liquidation.quantity
            else:
                builder.short_liq += liquidation.quantity
            late = late or was_late
        self.late_liquidations += late

    def advance(self, now_ms: int) -> None:
        """Close every forming bar whose window has ended by ``now_ms`` (call on a timer: a quiet market
        sends no trade that would close it)."""
        for series in self._series.values():
            if series.forming is not None and now_ms >= series.forming.open_time + series.width:
                series.close_forming()

    def forming(self, timeframe: str) -> Bar | None:
        builder = self._series[timeframe].forming
        return None if builder is None else builder.freeze(closed=False)

    def bars(self, timeframe: str, limit: int | None = None) -> list[Bar]:
        """Closed bars then the forming one (``closed=False``), oldest first; at most ``limit``."""
        series = self._series[timeframe]
        out = list(series.closed)
        if series.forming is not None:
            out.append(series.forming.freeze(closed=False))
        return out if limit is None else out[-limit:] if limit > 0 else []


def rollup(
    bars: Iterable[Bar],
    timeframe: str,
    *,
    tick_size: float,
    max_footprint_levels: int = DEFAULT_MAX_FOOTPRINT_LEVELS,
) -> list[Bar]:
    """Fold lower-timeframe bars (oldest first) into ``timeframe`` bars aligned to UTC.

    A higher bar is closed when its constituents are closed and either a later bar exists or its last
    constituent ends where the higher bar ends.
    """
    width = TIMEFRAMES[timeframe]
    out: list[Bar] = []
    builder: _BarBuilder | None = None
    all_closed = True
    ends_window = False
    for bar in bars:
        window = bar.open_time - bar.open_time % width
        if builder is None or window != builder.open_time:
            if builder is not None:
                out.append(builder.freeze(all_closed))
            builder = _BarBuilder(timeframe, window, bar.open, tick_size, max_footprint_levels)
            all_closed = True
        builder.merge(bar)
        all_closed = all_closed and bar.closed
        ends_window = bar.close_time == window + width
    if builder is not None:
        out.append(builder.freeze(all_closed and ends_window))
    return out
