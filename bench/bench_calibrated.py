"""The calibrated signal (the default) against the heuristic one, in-process, side by side: the signal on the last
1 000 bars of the real hourly BTC candles (synthetic bars when `../shared/data` is absent), median of repeated runs,
and where the calibrated one's time goes. Target (issue 19): under 20 ms on 1 000 bars.

Then the stored-data track record's replay of 5 000 bars (`DELTAFLOW_TRACK_RECORD_BARS`), three ways in the same
run: the heuristic signal, the calibrated one from scratch (a model fit at every bar), and the calibrated one with
the replay memory of every bar but the newest (what each bar close costs, `app/signals/replay_memory.py`).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from app.analytics import AnalysisParams, Candles, SignalParams, analyze
from app.analytics.model import KnownPredictions, fit_window
from app.analytics.model.calibrated import window_first
from app.analytics.series import signal_series
from app.analytics.series.features import forward_returns, model_features
from app.analytics.series.signal import component_scores, fibonacci_legs
from app.signals.study_cli import read_cryptodatadownload

BARS = 1_000
RUNS = 21
REPLAY_BARS = 5_000
REPLAY_RUNS = 3  # a replay from scratch takes seconds
TARGET_MS = 20.0
HOURLY = Path(__file__).resolve().parents[2] / "shared" / "data" / "candles" / "coinbase_btcusd_1h.csv"


def candles() -> tuple[Candles, str]:
    if HOURLY.is_file():
        return _last(read_cryptodatadownload(HOURLY, 3_600_000)), "BTC-USD 1h"
    rng = np.random.default_rng(7)
    close = 30_000 * np.exp(np.cumsum(0.005 * rng.standard_normal(BARS)))
    open_ = np.concatenate((close[:1], close[:-1]))
    walk = Candles.from_arrays(
        open_time=np.arange(BARS, dtype=np.int64) * 3_600_000, open=open_, close=close,
        high=np.maximum(open_, close) * 1.002, low=np.minimum(open_, close) * 0.998, volume=1 + rng.random(BARS),
    )  # fmt: skip
    return walk, "synthetic walk"


def _last(series: Candles, count: int = BARS) -> Candles:
    cut = slice(max(0, len(series) - count), None)
    return Candles.from_arrays(
        open_time=series.open_time[cut], open=series.open[cut], high=series.high[cut], low=series.low[cut],
        close=series.close[cut], volume=series.volume[cut], interval_ms=series.interval_ms,
    )  # fmt: skip


def median_ms(action: Callable[[], Any], runs: int = RUNS) -> float:
    action()  # warm-up: lazy imports and first-call setup
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def main() -> None:
    bars, source = candles()
    heuristic = AnalysisParams(signal=SignalParams(calibrated=False))
    calibrated = AnalysisParams()
    model = calibrated.signal.model
    result = analyze(bars, params=heuristic)
    features = model_features(component_scores(bars, result, heuristic, fibonacci_legs(bars, heuristic)), len(bars))
    forward = forward_returns(bars, model.horizon)
    first = window_first(len(bars) - 1, model)  # what the calibrated signal computes from
    rows = [
        ("signal, heuristic (analyze)", median_ms(lambda: analyze(bars, params=heuristic))),
        ("signal, calibrated (analyze)", median_ms(lambda: analyze(bars, params=calibrated))),
        ("  of which: component scores of the window's bars", median_ms(
            lambda: component_scores(bars, result, heuristic, fibonacci_legs(bars, heuristic), first))),
        ("  (component scores at every bar, as before)", median_ms(
            lambda: component_scores(bars, result, heuristic, fibonacci_legs(bars, heuristic)))),
        ("  of which: the model's fit", median_ms(lambda: fit_window(features, forward, len(bars) - 1, model))),
    ]  # fmt: skip
    print(f"{len(bars)} bars of {source}, median of {RUNS} in-process runs")
    print(f"{'what':<50} {'ms':>8}")
    for label, ms in rows:
        print(f"{label:<50} {ms:>8.1f}")
    worst = rows[1][1]
    verdict = "met" if worst < TARGET_MS else "MISSED"
    print(f"calibrated signal vs target < {TARGET_MS:.0f} ms: {verdict}; {worst / rows[0][1]:.1f}x the heuristic one")
    known = int(np.sum(np.isfinite(forward)))
    learned = int(np.sum(np.isfinite(forward[-model.window :])))
    print(f"model: horizon {model.horizon}, window {model.window}: learns from {learned} of the {known} known outcomes")
    replay_table()


def replay_table() -> None:
    if HOURLY.is_file():
        series, source = _last(read_cryptodatadownload(HOURLY, 3_600_000), REPLAY_BARS), "BTC-USD 1h"
    else:
        series, source = candles()[0], "synthetic walk"  # the 1 000 synthetic bars
    heuristic = AnalysisParams(signal=SignalParams(calibrated=False))
    calibrated = AnalysisParams()
    scratch = signal_series(series, calibrated)
    assert scratch.model is not None
    newest = len(series) - 1
    known = KnownPredictions(series.open_time[:newest], scratch.model.take(slice(0, newest)))
    resumed = signal_series(series, calibrated, known=known)
    assert np.array_equal(resumed.bias, scratch.bias), "the memory must not change the replay"
    rows = [
        ("replay, heuristic signal", median_ms(lambda: signal_series(series, heuristic), REPLAY_RUNS)),
        ("replay, calibrated, from scratch", median_ms(lambda: signal_series(series, calibrated), REPLAY_RUNS)),
        ("replay, calibrated, memory of all but 1 bar", median_ms(
            lambda: signal_series(series, calibrated, known=known), REPLAY_RUNS)),
    ]  # fmt: skip
    print(f"\ntrack-record replay of {len(series)} bars of {source}, median of {REPLAY_RUNS} runs")
    print(f"{'what':<50} {'ms':>8}")
    for label, ms in rows:
        print(f"{label:<50} {ms:>8.1f}")
    print(f"memory: {rows[1][1] / rows[2][1]:.0f}x faster than from scratch; fitted {resumed.fitted} of {len(series)}")


if __name__ == "__main__":
    main()
