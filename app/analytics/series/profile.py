"""The order-flow value area as a run ending at each bar saw it: ``profile_from_candles`` over every prefix.

The profile of bars ``0..t`` is binned on a tick that, by default, is the smallest 1-2-5 step dividing the
prefix's price range into at most ``profile_rows`` rows: a new high or low that takes the range past a step changes
the tick and re-bins every earlier bar (a handful of times per series: 9 in 100 000 random-walk bars, against
1 250 re-binnings when the tick was the range divided by the rows). Bars are therefore grouped into *epochs* (runs
of bars sharing tick, lowest level and level count):

* when an epoch starts on a new tick, the per-level sums of the bars before it are rebuilt with ``np.bincount``
  (the same sequential additions ``profile_from_candles`` performs, so the sums are bit-identical) — this
  rebuild is the one part that is not a single pass: it costs the prefix length once per change of tick;
* inside an epoch each bar adds its share to one level (two difference-array entries for the uniform spread), so
  the per-bar sums are a cumulative sum down the bars, again in ``bincount``'s order;
* the value area of every bar is then grown from its POC in lockstep across bars (one vectorised step per level
  added), reproducing ``profile.value_area``'s comparisons, sums and tie rules exactly.
"""

from __future__ import annotations

import math

import numpy as np

from app.analytics.footprint import nice_tick, tick_for_rows
from app.analytics.orderflow import OrderflowParams
from app.analytics.profile import MAX_PROFILE_LEVELS
from app.analytics.types import Candles, FloatArray, IntArray

# Bound on the cells of one per-bar histogram block (bars x levels): 500k floats, 4 MB, whatever the tick. The
# block's dozen passes (running sums, differences, the value-area growth) then stay in the CPU's caches: the value
# areas of 100 000 bars took 1.12 s of CPU with this bound against 1.49 s with 4M cells (best of 5, same run).
_BLOCK_CELLS = 500_000


def prefix_ticks(params: OrderflowParams, low_min: FloatArray, high_max: FloatArray) -> FloatArray:
    """``orderflow._profile_tick`` for every prefix (computed where the prefix's range changes: it never shrinks)."""
    if params.profile_tick is not None:
        return np.full(low_min.shape, float(params.profile_tick))
    spread = high_max - low_min
    starts = np.flatnonzero(np.concatenate(([True], spread[1:] != spread[:-1])))
    ticks = [
        tick_for_rows(width, params.profile_rows) if width > 0 else nice_tick(high)
        for width, high in zip(spread[starts].tolist(), high_max[starts].tolist(), strict=True)
    ]
    return np.repeat(np.array(ticks), np.diff(np.append(starts, spread.size)))


def _level_index(price: FloatArray, ticks: FloatArray) -> IntArray:
    """``footprint.level_index`` with a per-bar tick (the same arithmetic, element by element)."""
    levels: IntArray = np.floor(price / ticks * (1 + 1e-12)).astype(np.int64)
    return levels


def _level_prices(level: IntArray, ticks: FloatArray) -> FloatArray:
    """``footprint.level_price`` with a per-bar tick (the rounding precision depends on the tick)."""
    prices = level.astype(np.float64) * ticks
    distinct, which = np.unique(ticks, return_inverse=True)
    places = np.array([min(12, max(0, math.ceil(-math.log10(tick)) + 2)) for tick in distinct.tolist()])
    decimals = places[which.reshape(-1)]
    for count in np.unique(decimals).tolist():
        rows = decimals == count
        prices[rows] = np.round(prices[rows], count)
    return prices


class _Bins:
    """Per-level running sums of the profile on one tick, in level coordinates starting at ``origin``.

    ``added`` is the ``np.bincount`` of each bar's share at its lowest level (at its price level for the
    ``typical`` and ``close`` spreads) and ``removed`` the one just past its highest level, both summed in bar
    order exactly as ``profile_from_candles`` sums them.
    """

    def __init__(self, prices: _Prices, tick: float, start: int, stop: int) -> None:
        """Levels of bars ``0..stop-1`` on ``tick``, and the sums of bars ``0..start-1`` (the rebuild)."""
        self.uniform = prices.uniform
        # Into buffers allocated once: fresh multi-megabyte arrays per rebuild would cost page faults.
        scaled, levels = prices.scaled[:, :stop], prices.levels[:, :stop]
        np.divide(prices.low_high[:, :stop], tick, out=scaled)
        scaled *= 1 + 1e-12
        if not prices.nonnegative:  # truncation is the floor for the usual positive prices, and saves a pass
            np.floor(scaled, out=scaled)
        np.copyto(levels, scaled, casting="unsafe")
        # Levels grow with price, so the extreme levels are those of the extreme prices (no pass over the bars).
        self.origin = _scalar_level(prices.low_min[stop - 1], tick)  # the profile's lowest level, whatever the spread
        self.width = _scalar_level(prices.high_max[stop - 1], tick) - self.origin + 2
        levels -= self.origin
        self.removed = np.zeros(self.width)
        if self.uniform:
            span = prices.span[:stop]
            np.subtract(levels[1], levels[0], out=span)
            span += 1
            self.share = np.divide(prices.volume[:stop], span, out=prices.share[:stop])
            self.add_at = levels[0]
            self.remove_at = levels[1]  # the entry one past the highest level: shifted by one below
            self.removed[1:] = np.bincount(self.remove_at[:start], self.share[:start], self.width - 1)
        else:
            self.share = prices.volume[:stop]
            self.add_at = _level_index(prices.at[:stop], np.full(stop, tick)) - self.origin
            self.remove_at = self.add_at
        self.added = np.bincount(self.add_at[:start], self.share[:start], self.width).astype(np.float64)

    def advance(self, start: int, stop: int, offset: int, out: FloatArray) -> None:
        """Write into ``out`` (one row per bar ``start..stop-1``) the profile volumes over ``out``'s levels
        from ``offset`` on, continuing the sequential additions bar by bar."""
        levels = out.shape[1]
        added = self._running(self.added, self.add_at, 0, start, stop)
        self.added = added[-1].copy()
        if not self.uniform:
            out[:] = added[1:, offset : offset + levels]
            return
        removed = self._running(self.removed, self.remove_at, 1, start, stop)
        self.removed = removed[-1].copy()
        steps = np.subtract(added[1:, offset : offset + levels + 1], removed[1:, offset : offset + levels + 1])
        np.cumsum(steps, axis=1, out=steps)
        np.maximum(steps[:, :levels], 0.0, out=out)

    def _running(self, initial: FloatArray, at: IntArray, shift: int, start: int, stop: int) -> FloatArray:
        """Row 0: ``initial``; row ``k``: the sums after bar ``start + k - 1`` (cumulative sum down the bars)."""
        sums = np.zeros((stop - start + 1, self.width))
        sums[0] = initial
        sums[np.arange(1, stop - start + 1), at[start:stop] + shift] = self.share[start:stop]
        np.cumsum(sums, axis=0, out=sums)
        return sums


def _scalar_level(price: float, tick: float) -> int:
    return math.floor(price / tick * (1 + 1e-12))


class _Prices:
    """The candle columns every rebuild reads, prepared once."""

    def __init__(self, candles: Candles, params: OrderflowParams, low_min: FloatArray, high_max: FloatArray) -> None:
        self.low_min, self.high_max = low_min.tolist(), high_max.tolist()
        self.uniform = params.volume_distribution == "uniform"
        self.low_high = np.stack((candles.low, candles.high))
        self.scaled = np.empty_like(self.low_high)
        self.levels = np.empty(self.low_high.shape, dtype=np.int64)
        self.span = np.empty(len(candles), dtype=np.int64)
        self.share = np.empty(len(candles))
        self.nonnegative = bool(candles.low.min() >= 0)
        self.volume = candles.volume
        self.at = candles.close
        if params.volume_distribution == "typical":
            self.at = (candles.high + candles.low + candles.close) / 3


def _points_of_control(hist: FloatArray, size: IntArray) -> IntArray:
    """``profile.point_of_control`` per row: the first maximum, unless tied (then nearest the centre, lowest)."""
    width = hist.shape[1]
    columns = np.arange(width)
    peak = hist.max(axis=1)  # volumes are >= 0, so the zero padding past a row's levels never wins
    is_peak = (hist == peak[:, None]) & (columns[None, :] < size[:, None])
    poc: IntArray = np.argmax(is_peak, axis=1)
    tied = np.flatnonzero(is_peak.sum(axis=1) > 1)
    if tied.size:
        distance = np.abs(2 * columns[None, :] - (size[tied] - 1)[:, None])
        key = np.where(is_peak[tied], distance * width + columns[None, :], np.iinfo(np.int64).max)
        poc[tied] = np.argmin(key, axis=1)
    return poc


def _value_areas(hist: FloatArray, size: IntArray, pct: float, step: int) -> tuple[IntArray, IntArray]:
    """(lowest row, highest row) of each bar's value area, grown as ``profile.value_area`` grows it.

    The rows above the POC are always added in the same groups of ``step`` (and so are those below), so each
    candidate sum is one entry of ``group_sums``; the growth runs in lockstep over the bars still growing.
    """
    count, width = hist.shape
    poc = _points_of_control(hist, size)
    total = np.empty(count)
    for levels in np.unique(size).tolist():  # np.sum over the exact row length: pairwise sums depend on it
        rows = size == levels
        total[rows] = hist[rows, :levels].sum(axis=1)
    target = pct * total
    last = size - 1
    # padded[:, c + 1] = hist[:, c], with zeros around, so a group cut short by an edge adds zeros (x + 0.0 = x).
    padded = np.zeros((count, width + step + 1))
    padded[:, 1 : width + 1] = hist
    group_sums = padded[:, : width + 1].copy()
    for within in range(1, step):  # value_area's sum(list): (0 + v[k]) + v[k + 1], lowest row first
        group_sums += padded[:, within : width + 1 + within]
    sums, stride = group_sums.ravel(), group_sums.shape[1]
    taken_up, taken_down = np.zeros(count, dtype=np.int64), np.zeros(count, dtype=np.int64)
    up_limit = (last - poc + step - 1) // step
    down_limit = (poc + step - 1) // step
    accumulated = hist[np.arange(count), poc]
    row = np.flatnonzero((accumulated < target) & ((up_limit > 0) | (down_limit > 0)))
    grown, goal, first, centre = accumulated[row], target[row], row * stride, poc[row]
    ups, downs, up_limit, down_limit = taken_up[row], taken_down[row], up_limit[row], down_limit[row]
    while row.size:
        # Rows high + 1 .. high + step are the group at padded column high + 2, rows low - step .. low - 1 the
        # one at low - step + 1 (the zero column pads a group cut short by the lowest row); an exhausted side's
        # index is clamped and its sum ignored.
        up_sum = sums[first + np.minimum(centre + step * ups + 2, stride - 1)]
        down_sum = sums[first + np.maximum(centre - step * (downs + 1) + 1, 0)]
        go_up = (ups < up_limit) & ((downs >= down_limit) | (up_sum >= down_sum))
        grown = grown + np.where(go_up, up_sum, down_sum)
        ups = ups + go_up
        downs = downs + ~go_up
        growing = (grown < goal) & ((ups < up_limit) | (downs < down_limit))
        if not growing.all():
            done = ~growing
            taken_up[row[done]], taken_down[row[done]] = ups[done], downs[done]
            row, grown, goal, first, centre = (
                row[growing],
                grown[growing],
                goal[growing],
                first[growing],
                centre[growing],
            )
            ups, downs, up_limit, down_limit = ups[growing], downs[growing], up_limit[growing], down_limit[growing]
    return np.maximum(poc - step * taken_down, 0), np.minimum(poc + step * taken_up, last)


def value_area_series(candles: Candles, params: OrderflowParams, first: int = 0) -> tuple[FloatArray, FloatArray]:
    """Value-area low and high of ``profile_from_candles`` over bars ``0..t``, for every bar ``t`` from ``first`` on
    (NaN before it: a caller that reads only the last bars skips the others' profiles, ~2/3 of the component scores'
    time). The rows from ``first`` on are the same bits whatever ``first`` is: ``_Bins`` rebuilds the sums of the
    bars before it in bar order, as the running sums add them."""
    bars = len(candles)
    low_min = np.minimum.accumulate(candles.low)
    high_max = np.maximum.accumulate(candles.high)
    ticks = prefix_ticks(params, low_min, high_max)
    base = _level_index(low_min, ticks)
    size = _level_index(high_max, ticks) - base + 1
    if int(size.max()) > MAX_PROFILE_LEVELS:
        raise ValueError(f"the profile tick gives more than {MAX_PROFILE_LEVELS} levels; use a larger tick")
    new_tick = np.concatenate(([True], ticks[1:] != ticks[:-1]))
    new_epoch = new_tick | np.concatenate(([True], (base[1:] != base[:-1]) | (size[1:] != size[:-1])))
    tick_starts = np.flatnonzero(new_tick)
    tick_stops = np.append(tick_starts[1:], bars)
    epoch_stops = np.append(np.flatnonzero(new_epoch)[1:], bars)
    run_of = np.cumsum(new_tick) - 1
    epoch_stop_of = epoch_stops[np.cumsum(new_epoch) - 1]
    step = 2 if params.value_area_method == "two_row" else 1
    block = max(1, _BLOCK_CELLS // (int(size.max()) + 2))
    first = min(max(0, first), bars)
    value_low, value_high = np.zeros(bars, dtype=np.int64), np.zeros(bars, dtype=np.int64)
    prices = _Prices(candles, params, low_min, high_max)
    bins: _Bins | None = None
    for start in range(first, bars, block):
        end = min(bars, start + block)
        hist = np.zeros((end - start, int(size[start:end].max())))
        bar = start
        while bar < end:
            run = int(run_of[bar])
            if bins is None or bar == tick_starts[run]:  # a tick run starts, or the first bar computed
                bins = _Bins(prices, float(ticks[bar]), bar, int(tick_stops[run]))
            stop = min(end, int(epoch_stop_of[bar]))
            bins.advance(bar, stop, int(base[bar]) - bins.origin, hist[bar - start : stop - start, : int(size[bar])])
            bar = stop
        value_low[start:end], value_high[start:end] = _value_areas(hist, size[start:end], params.value_area_pct, step)
    low, high = _level_prices(base + value_low, ticks), _level_prices(base + value_high, ticks)
    low[:first], high[:first] = np.nan, np.nan
    return low, high
