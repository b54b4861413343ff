"""What a condition sees of a closed bar: the signal and the analytics at the last bar of an `analyze()` result.

Events count at the bar that confirmed them (its close time), never at the bar they refer to: a CHoCH is known
when the close breaks the swing, and a swing when its right-hand bars have closed. Pure: no I/O.
"""

from __future__ import annotations

import math

import numpy as np

from app.alerts.evaluator import BarEvent, BarSnapshot
from app.analytics.engine import AnalysisResult
from app.analytics.events import EventTable
from app.analytics.types import Candles

# SMC's level events are named by side (`high`/`low`); as alert events a sweep of highs is bearish (price took the
# buy stops above and closed back), a sweep of lows bullish.
_SWEEP_DIRECTION = {"high": "bearish", "low": "bullish"}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _confirmed_at(table: EventTable, close_time: int) -> list[BarEvent]:
    rows = np.flatnonzero(table.confirmed_time == close_time)
    events = []
    for row in rows.tolist():
        direction = table.direction_names[0 if table.direction[row] > 0 else 1]
        top = float(table.top[row])
        bottom = float(table.bottom[row]) if table.zone else top
        events.append(BarEvent(table.kinds[int(table.kind[row])], direction, bottom, top))
    return events


def _swept_at(table: EventTable, close_time: int) -> list[BarEvent]:
    rows = np.flatnonzero(table.swept_time == close_time)
    events = []
    for row in rows.tolist():
        side = table.direction_names[0 if table.direction[row] > 0 else 1]
        level = float(table.top[row])
        events.append(BarEvent("liquidity_sweep", _SWEEP_DIRECTION.get(side), level, level))
    return events


def _events(result: AnalysisResult, close_time: int) -> tuple[BarEvent, ...]:
    found: list[BarEvent] = []
    if result.smc is not None:
        smc = result.smc
        for table in (smc.structure, smc.fair_value_gaps, smc.order_blocks):
            found += _confirmed_at(table, close_time)
        # Equal highs / lows carry no direction of their own: their kind names the side.
        found += [BarEvent(e.kind, None, e.bottom, e.top) for e in _confirmed_at(smc.liquidity, close_time)]
        for table in (smc.swings, smc.liquidity, smc.previous_levels):
            found += _swept_at(table, close_time)
    if result.cvd is not None:
        found += _confirmed_at(result.cvd.divergences, close_time)
    return tuple(found)


def snapshot_at_last_bar(result: AnalysisResult, candles: Candles | None = None) -> BarSnapshot:
    """The snapshot of the result's last (closed) bar. `candles` (the analysed ones) give the exact close and
    volume; without them the close is the signal's entry or the Fibonacci module's last close, and the volume the
    CVD module's buy + sell volume."""
    signal = result.signal
    close_time = result.last_close_time
    levels = signal.levels
    close: float | None = None
    volume: float | None = None
    if candles is not None:
        close, volume = float(candles.close[-1]), float(candles.volume[-1])
    elif levels is not None:
        close = levels.entry
    elif result.fibonacci is not None:
        close = result.fibonacci.last_close
    cvd = result.cvd
    if volume is None and cvd is not None:
        volume = float(cvd.buy_volume[-1] + cvd.sell_volume[-1])
    fibonacci: dict[float, float] = {}
    if result.fibonacci is not None and result.fibonacci.direction is not None:
        fib = result.fibonacci
        # Extensions first, so a ratio that is both (only with custom parameters) resolves to the retracement.
        for ratios, prices in ((fib.params.extensions, fib.extensions), (fib.params.retracements, fib.retracements)):
            for ratio, price in zip(ratios, prices.tolist(), strict=False):
                if math.isfinite(price):
                    fibonacci[float(ratio)] = float(price)
    rsi = None if result.indicators is None else _finite(float(result.indicators.rsi[-1]))
    return BarSnapshot(
        close_time=close_time,
        bias=signal.bias,
        score=signal.score,
        confidence=signal.confidence,
        close=close,
        rsi=rsi,
        cvd=None if cvd is None else _finite(float(cvd.cvd[-1])),
        delta=None if cvd is None else _finite(float(cvd.delta[-1])),
        volume=volume,
        events=_events(result, close_time),
        fibonacci=fibonacci,
        stop=None if levels is None else levels.stop,
        target=None if levels is None or not levels.targets else levels.targets[0].price,
    )


def events_at(result: AnalysisResult, close_time: int) -> tuple[BarEvent, ...]:
    """The events a condition sees at the bar closing at `close_time`, in the order `snapshot_at_last_bar` lists
    them. Events are causal, so a run over a longer series lists the same ones for that bar (the backtest reads
    every bar's events from one run)."""
    return _events(result, close_time)
