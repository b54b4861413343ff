"""Analytics benchmarks: ``python bench/bench_analytics.py``.

Prints, measured in this run on the same data: all modules on 100 000 candles, footprint + CVD on 1 000 000
trades, and our SMC against the ``smartmoneyconcepts`` package (when it is installed) on the same candles.
Each figure is the median of several runs after one warm-up run.
"""

from __future__ import annotations

import importlib
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from app.analytics import Candles, Trades, analyze
from app.analytics.indicators import atr
from app.analytics.liquidity import equal_levels
from app.analytics.rangequery import PriceTables
from app.analytics.smc import SmcParams, compute_smc, fair_value_gaps, order_blocks, structure_breaks
from app.analytics.swings import detect_swings

CANDLE_COUNT = 100_000
TRADE_COUNT = 1_000_000
SWING_LENGTH = 5
RUNS = 7


def random_walk_candles(count: int, seed: int = 42) -> Candles:
    rng = np.random.default_rng(seed)
    close = 30_000 + np.cumsum(rng.standard_normal(count)) * 25
    open_ = np.concatenate((close[:1], close[:-1]))
    return Candles.from_arrays(
        open_time=np.arange(count, dtype=np.int64) * 60_000 + 1_700_000_000_000,
        open=open_,
        high=np.maximum(open_, close) + rng.random(count) * 15,
        low=np.minimum(open_, close) - rng.random(count) * 15,
        close=close,
        volume=rng.random(count) * 40,
        interval_ms=60_000,
    )


def random_trades(count: int, bars: int, seed: int = 7) -> tuple[Candles, Trades]:
    """``count`` trades over ``bars`` one-minute bars, prices on a 0.5 grid, with matching candles."""
    rng = np.random.default_rng(seed)
    start = 1_700_000_000_000
    times = np.sort(rng.integers(start, start + bars * 60_000, count))
    price = np.round((30_000 + np.cumsum(rng.standard_normal(count)) * 0.5) * 2) / 2
    qty = rng.exponential(0.05, count)
    side = rng.choice(np.array([-1, 1], dtype=np.int8), count)
    bar = (times - start) // 60_000
    starts = np.searchsorted(bar, np.arange(bars))
    ends = np.append(starts[1:], count)
    opens, closes = price[starts], price[ends - 1]
    highs = np.maximum.reduceat(price, starts)
    lows = np.minimum.reduceat(price, starts)
    volume = np.bincount(bar, weights=qty, minlength=bars)
    candles = Candles.from_arrays(
        open_time=start + np.arange(bars, dtype=np.int64) * 60_000,
        open=opens, high=highs, low=lows, close=closes, volume=volume, interval_ms=60_000,
    )  # fmt: skip
    return candles, Trades.from_arrays(time=times, price=price, qty=qty, side=side)


def median_ms(work: Callable[[], object], runs: int = RUNS) -> float:
    work()  # warm-up: caches, lazy imports, JIT compilation for the reference package
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def ours_smc_steps(candles: Candles) -> dict[str, Callable[[], object]]:
    tables = PriceTables(candles.high, candles.low, candles.close)
    swings = detect_swings(
        candles.high, candles.low, SWING_LENGTH, high_table=tables.high_max, low_table=tables.low_min
    )
    average_range = atr(candles.high, candles.low, candles.close, 14)
    structure = structure_breaks(candles, swings, tables)
    return {
        # Built once per run and shared by the functions below; counted so the comparison stays fair.
        "shared tables + ATR": lambda: (
            PriceTables(candles.high, candles.low, candles.close),
            atr(candles.high, candles.low, candles.close, 14),
        ),
        "swing_highs_lows": lambda: detect_swings(candles.high, candles.low, SWING_LENGTH),
        "fvg": lambda: fair_value_gaps(candles, tables, average_range),
        "bos_choch": lambda: structure_breaks(candles, swings, tables),
        "ob": lambda: order_blocks(candles, structure, tables),
        "liquidity": lambda: equal_levels(candles, swings, average_range, 0.1, tables),
    }


def reference_smc_steps(candles: Candles) -> dict[str, Callable[[], object]] | None:
    if importlib.util.find_spec("smartmoneyconcepts") is None:
        return None
    pandas: Any = importlib.import_module("pandas")
    reference: Any = importlib.import_module("smartmoneyconcepts").smc
    frame = pandas.DataFrame({
        "open": candles.open, "high": candles.high, "low": candles.low, "close": candles.close,
        "volume": candles.volume,
    })  # fmt: skip
    swings = reference.swing_highs_lows(frame, swing_length=SWING_LENGTH)
    return {
        "swing_highs_lows": lambda: reference.swing_highs_lows(frame, swing_length=SWING_LENGTH),
        "fvg": lambda: reference.fvg(frame),
        "bos_choch": lambda: reference.bos_choch(frame, swings),
        "ob": lambda: reference.ob(frame, swings),
        "liquidity": lambda: reference.liquidity(frame, swings),
    }


def row(name: str, measured: float, target: str, verdict: str) -> str:
    return f"{name:<46} {measured:>10.1f} ms   {target:<14} {verdict}"


def main() -> None:
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}; median of {RUNS} runs after a warm-up\n")
    print(f"{'benchmark':<46} {'median':>13}   {'target':<14} verdict")
    candles = random_walk_candles(CANDLE_COUNT)
    all_modules = median_ms(lambda: analyze(candles))
    print(row(f"analyze: all modules, {CANDLE_COUNT:,} candles", all_modules, "< 250 ms", _verdict(all_modules, 250)))
    smc_total = median_ms(lambda: compute_smc(candles, SmcParams(swing_length=SWING_LENGTH)))
    print(row("  of which compute_smc (every SMC family)", smc_total, "", ""))
    trade_candles, trades = random_trades(TRADE_COUNT, 1_440)
    flow = median_ms(lambda: analyze(trade_candles, trades, modules=["cvd", "orderflow"]), runs=5)
    print(row(f"footprint + CVD: {TRADE_COUNT:,} trades, 1 440 bars", flow, "< 500 ms", _verdict(flow, 500)))

    print(f"\nSMC vs smartmoneyconcepts on the same {CANDLE_COUNT:,} candles (swing length {SWING_LENGTH})")
    reference = reference_smc_steps(candles)
    if reference is None:
        print("smartmoneyconcepts: not installed (pip install smartmoneyconcepts to compare)")
        return
    ours = ours_smc_steps(candles)
    print(f"{'function':<20} {'ours':>10} {'smartmoneyconcepts':>20} {'speed-up':>10}")
    total_ours = total_reference = 0.0
    for name, work in ours.items():
        mine = median_ms(work)
        total_ours += mine
        if name not in reference:
            print(f"{name:<20} {mine:>8.1f} ms {'-':>20} {'':>10}")
            continue
        theirs = median_ms(reference[name], runs=3)
        total_reference += theirs
        print(f"{name:<20} {mine:>8.1f} ms {theirs:>17.1f} ms {theirs / mine:>9.1f}x")
    speed_up = total_reference / total_ours
    print(f"{'total':<20} {total_ours:>8.1f} ms {total_reference:>17.1f} ms {speed_up:>9.1f}x   target >= 20x")


def _verdict(measured: float, target: float) -> str:
    return "ok" if measured < target else "MISSED"


if __name__ == "__main__":
    main()
