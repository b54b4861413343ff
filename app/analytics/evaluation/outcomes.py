"""What each bar's signal earned over each horizon: the forward return, the bias-signed trade return and the
outcome of the signal's own stop and target in R multiples.

Rules (bar ``t`` is the bar whose close published the signal; ``h`` the horizon in bars):

* Entry at the OPEN of bar ``t + 1`` (the signal is known only at ``t``'s close); exit at the CLOSE of bar
  ``t + h``. Forward return ``close[t + h] / open[t + 1] - 1`` (gross, unsigned; defined for every bar, neutral
  ones included: the IC and the ``always_long`` baseline use it).
* Trade return ``bias · forward return - 2 · cost``: ``cost`` is fee plus slippage per side, as a fraction of the
  price, paid on entry and on exit. NaN for neutral bars (no trade).
* Undecided: when ``t + h`` is beyond the series every figure of bar ``t`` is NaN; the bar is counted as pending by
  the metrics, never dropped silently.
* Stop and target are the published absolute prices, computed by the producer from ``close[t]``; a follower places
  those prices, so they are applied unchanged to the entry at ``open[t + 1]`` and ``R = |entry - stop|`` is measured
  from the real entry. Bars ``t + 1 … t + h`` are scanned in order; on each bar:

  1. the open at or through the stop (a gap) stops the trade at the OPEN (worse than the stop);
  2. else the open at or through the target fills the target order at the OPEN;
  3. else a range touching the stop stops at the stop — also when the same bar touches the target (the intrabar
     order is unknown and the stop is the conservative reading);
  4. else a range touching the target exits at the target.

  A trade still open after bar ``t + h`` times out at ``close[t + h]``. The outcome in R is
  ``bias · (exit - entry) / R - 2 · cost · entry / R`` (costs in R as well). An entry that opens at or through its
  own stop (the plan is dead on arrival, and R would be meaningless or zero) scores -1 R: a vendor cannot publish
  stops that are routinely through by the next open and have them count as free. No stop: no R outcome (NaN); no
  target: only the stop and the time-out apply.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from app.analytics.evaluation.inputs import FloatArray, SignalSeries

NO_EXIT = 0
STOP = 1
TARGET = 2
TIMEOUT = 3


@dataclass(frozen=True, slots=True, eq=False)
class Outcomes:
    """Per-bar outcomes for one horizon; every array has one row per bar of the series."""

    horizon: int
    forward_return: FloatArray  # gross, unsigned; NaN when undecided
    trade_return: FloatArray  # bias-signed, net of costs; NaN when neutral or undecided
    r_multiple: FloatArray  # stop/target/time-out outcome in R, net; NaN when no stop, neutral or undecided
    exit_reason: NDArray[np.int8]  # NO_EXIT, STOP, TARGET or TIMEOUT
    spans_gap: NDArray[np.bool_]  # the window t … t + h contains missing bars


def _shifted(values: FloatArray, k: int) -> FloatArray:
    """``out[t] = values[t + k]``, NaN past the end."""
    out = np.full(values.shape[0], np.nan)
    if k < values.shape[0]:
        out[: values.shape[0] - k] = values[k:]
    return out


def compute_outcomes(series: SignalSeries, horizons: tuple[int, ...], cost: float) -> dict[int, Outcomes]:
    """Outcomes for every horizon in one scan of at most ``max(horizons)`` vectorised steps."""
    n = len(series)
    direction = series.bias.astype(np.float64)
    traded = direction != 0
    entry = _shifted(series.open, 1)
    stop, target = series.stop, series.target
    with np.errstate(invalid="ignore"):
        risk = np.abs(entry - stop)
        managed = traded & np.isfinite(stop) & np.isfinite(entry)
        dead_on_arrival = managed & (direction * (entry - stop) <= 0)
    exited = dead_on_arrival.copy()
    exit_price = np.where(dead_on_arrival, entry, np.nan)
    reason = np.where(dead_on_arrival, STOP, NO_EXIT).astype(np.int8)
    gap_count = np.concatenate(([0], np.cumsum(series.gap_flags())))
    wanted = set(horizons)
    results: dict[int, Outcomes] = {}
    # Prices padded with NaN past the end: bar t + k of every t is a view, not a copy.
    tail = np.full(max(horizons) + 1, np.nan)
    padded = tuple(np.concatenate((column, tail)) for column in (series.open, series.high, series.low))
    for k in range(1, max(horizons) + 1):
        if (managed & ~exited).any():  # once every trade has exited, later bars change nothing
            bar_k = tuple(column[k : k + n] for column in padded)
            _scan_bar(bar_k, direction, stop, target, managed, (exited, exit_price, reason))
        if k in wanted:
            bars = np.arange(n)
            spans = (gap_count[np.minimum(bars + k, n - 1)] - gap_count[bars]) > 0
            results[k] = _snapshot(
                series, k, direction, entry, risk, (exit_price, reason), dead_on_arrival, spans, cost
            )
    evaluated = series.evaluated()
    if not evaluated.all():  # rows past the evaluated ones: no outcome of their own, so no figure counts them
        for k, found in results.items():
            results[k] = replace(
                found,
                forward_return=np.where(evaluated, found.forward_return, np.nan),
                trade_return=np.where(evaluated, found.trade_return, np.nan),
                r_multiple=np.where(evaluated, found.r_multiple, np.nan),
                exit_reason=np.where(evaluated, found.exit_reason, NO_EXIT).astype(np.int8),
            )
    return results


def _scan_bar(
    bar_k: tuple[FloatArray, ...],
    direction: FloatArray,
    stop: FloatArray,
    target: FloatArray,
    managed: NDArray[np.bool_],
    state: tuple[NDArray[np.bool_], FloatArray, NDArray[np.int8]],
) -> None:
    """Apply bar ``t + k`` (its open, high and low for every t) to every trade still open, in the documented
    order; ``state`` (exited, exit price, reason) is updated in place."""
    exited, exit_price, reason = state
    open_k, high_k, low_k = bar_k
    long = direction > 0
    worst, best = np.where(long, low_k, high_k), np.where(long, high_k, low_k)
    live = managed & ~exited & np.isfinite(open_k)
    with np.errstate(invalid="ignore"):
        steps = (
            (direction * (open_k - stop) <= 0, open_k, STOP),
            (direction * (open_k - target) >= 0, open_k, TARGET),
            (direction * (worst - stop) <= 0, stop, STOP),
            (direction * (best - target) >= 0, target, TARGET),
        )
    for hit, price, code in steps:
        now = live & hit
        exit_price[now] = price[now]
        reason[now] = code
        exited |= now
        live &= ~now


def _snapshot(
    series: SignalSeries,
    horizon: int,
    direction: FloatArray,
    entry: FloatArray,
    risk: FloatArray,
    exits: tuple[FloatArray, NDArray[np.int8]],
    dead_on_arrival: NDArray[np.bool_],
    spans: NDArray[np.bool_],
    cost: float,
) -> Outcomes:
    exit_price, reason = exits
    close_h = _shifted(series.close, horizon)
    decided = np.isfinite(close_h) & np.isfinite(entry)
    forward = np.where(decided, close_h / entry - 1, np.nan)
    trade = np.where(decided & (direction != 0), direction * forward - 2 * cost, np.nan)
    has_levels = decided & (direction != 0) & np.isfinite(series.stop)
    final_reason = np.where(has_levels & (reason == NO_EXIT), TIMEOUT, reason)
    final_reason = np.where(has_levels, final_reason, NO_EXIT).astype(np.int8)
    final_exit = np.where(reason == NO_EXIT, close_h, exit_price)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = direction * (final_exit - entry) / risk - 2 * cost * entry / risk
    r = np.where(dead_on_arrival, -1.0, r)
    r = np.where(has_levels, r, np.nan)
    return Outcomes(
        horizon=horizon,
        forward_return=forward,
        trade_return=trade,
        r_multiple=r,
        exit_reason=final_reason,
        spans_gap=spans & decided,
    )
