"""The signal at every bar: ``signal_series`` (one pass) beside ``analyze`` on every prefix (the naive loop).

Measured in this run on the same 100 000 one-minute bars as ``bench_analytics`` (a seeded random walk), all
modules. The naive loop over 100 000 prefixes would take hours, so it is timed on the last
``BENCH_SERIES_PREFIXES`` prefixes (300 by default) and extrapolated: a prefix's analysis costs time linear in
its length, so the whole loop is estimated as the mean time per bar of prefix measured there times the sum of
all prefix lengths (n·(n+1)/2). The rows of those prefixes are also compared with the one-pass result.
Target: the one pass under 1 s.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from app.analytics import AnalysisParams, Candles, analyze
from app.analytics.orderflow import OrderflowParams
from app.analytics.series import signal_series
from app.analytics.series.profile import prefix_ticks, value_area_series
from bench.bench_analytics import random_walk_candles

CANDLE_COUNT = 100_000
PREFIXES = int(os.environ.get("BENCH_SERIES_PREFIXES", "300"))
RUNS = 5
TARGET_S = 1.0
BIAS = {"long": 1, "short": -1, "neutral": 0}


def median_s(work: Callable[[], object], runs: int = RUNS) -> float:
    work()  # warm-up
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def naive_tail(candles: Candles, count: int) -> tuple[float, int, list[tuple[int, str, float]]]:
    """Seconds for ``analyze`` on each of the last ``count`` prefixes, their total length, and their signals."""
    bars = len(candles)
    signals = []
    started = time.perf_counter()
    for end in range(bars - count + 1, bars + 1):
        signal = analyze(candles.head(end)).signal
        signals.append((end - 1, signal.bias, signal.score))
    return time.perf_counter() - started, sum(range(bars - count + 1, bars + 1)), signals


def main() -> None:
    candles = random_walk_candles(CANDLE_COUNT)
    bars = len(candles)
    series = signal_series(candles)
    one_pass = median_s(lambda: signal_series(candles))
    profile = median_s(lambda: value_area_series(candles, OrderflowParams()))
    fixed = AnalysisParams(orderflow=OrderflowParams(profile_tick=50.0))
    fixed_tick = median_s(lambda: signal_series(candles, fixed))
    without_flow = median_s(lambda: signal_series(candles, modules=["smc", "indicators", "cvd", "fibonacci"]))
    full_analysis = median_s(lambda: analyze(candles))
    naive_s, measured_bars, signals = naive_tail(candles, PREFIXES)
    per_bar = naive_s / measured_bars
    naive_all = per_bar * bars * (bars + 1) / 2
    agree = sum(
        BIAS[bias] == int(series.bias[row]) and math.isclose(score, float(series.score[row]), rel_tol=1e-9)
        for row, bias, score in signals
    )
    low_min, high_max = np.minimum.accumulate(candles.low), np.maximum.accumulate(candles.high)
    ranges = int(np.count_nonzero(np.diff(high_max - low_min)))
    ticks = int(np.count_nonzero(np.diff(prefix_ticks(OrderflowParams(), low_min, high_max))))
    print(f"signal at every bar of {bars} one-minute bars (random walk), all modules; median of {RUNS} runs")
    print(f"{'method':<58} {'time':>10} {'per bar':>10}")
    verdict = f"<{TARGET_S:.0f} s " + ("met" if one_pass < TARGET_S else "MISSED")
    print(f"{'one pass: signal_series':<58} {one_pass:>9.2f}s {one_pass / bars * 1e6:>8.1f}us  {verdict}")
    print(f"{'  of which the expanding value area (orderflow placement)':<58} {profile:>9.2f}s")
    print(f"{'  signal_series without orderflow':<58} {without_flow:>9.2f}s")
    print(f"{'  signal_series with a fixed profile tick (no re-binning)':<58} {fixed_tick:>9.2f}s")
    print(f"{'  for scale: one analyze() over all the bars':<58} {full_analysis:>9.2f}s")
    label = f"naive: analyze on the last {PREFIXES} prefixes (measured)"
    print(f"{label:<58} {naive_s:>9.2f}s {naive_s / PREFIXES * 1e6:>8.0f}us")
    label = f"naive: all {bars} prefixes (extrapolated, linear in length)"
    print(f"{label:<58} {naive_all:>9.0f}s {naive_all / bars * 1e6:>8.0f}us")
    print(f"speed-up of the one pass over the naive loop: {naive_all / one_pass:,.0f}x")
    print(f"rows checked against the naive loop: {agree}/{len(signals)} identical (bias, score)")
    print(
        f"the price range changed {ranges} times, the profile's 1-2-5 tick {ticks} times: each change of tick"
        " re-bins the value area's earlier bars once"
    )


if __name__ == "__main__":
    main()
