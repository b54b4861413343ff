"""``analyze``: run the requested modules over one data set, sharing the work they have in common.

Shared per run: the price sparse tables, swings per swing length, ATR per period and the per-bar deltas, so
requesting every module costs less than running them one by one. The signal is always computed from whichever
modules ran.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from app.analytics.cvd import BarDelta, CvdParams, CvdResult, bar_delta, compute_cvd
from app.analytics.fibonacci import FibonacciParams, FibonacciResult, compute_fibonacci
from app.analytics.indicators import IndicatorParams, IndicatorResult, atr, compute_indicators
from app.analytics.orderflow import OrderflowParams, OrderflowResult, compute_orderflow
from app.analytics.rangequery import PriceTables
from app.analytics.signals import Signal, SignalParams, compute_signal
from app.analytics.smc import SmcParams, SmcResult, compute_smc
from app.analytics.swings import Swings, detect_swings
from app.analytics.types import Candles, FloatArray, Liquidations, Trades

MODULES = ("cvd", "orderflow", "smc", "fibonacci", "indicators")


@dataclass(frozen=True, slots=True)
class AnalysisParams:
    cvd: CvdParams = field(default_factory=CvdParams)
    orderflow: OrderflowParams = field(default_factory=OrderflowParams)
    smc: SmcParams = field(default_factory=SmcParams)
    fibonacci: FibonacciParams = field(default_factory=FibonacciParams)
    indicators: IndicatorParams = field(default_factory=IndicatorParams)
    signal: SignalParams = field(default_factory=SignalParams)


@dataclass(frozen=True, slots=True, eq=False)
class AnalysisResult:
    interval_ms: int
    bar_count: int
    first_open_time: int
    last_close_time: int
    modules: tuple[str, ...]
    signal: Signal
    cvd: CvdResult | None = None
    orderflow: OrderflowResult | None = None
    smc: SmcResult | None = None
    fibonacci: FibonacciResult | None = None
    indicators: IndicatorResult | None = None

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "interval_ms": self.interval_ms,
            "bar_count": self.bar_count,
            "first_open_time": self.first_open_time,
            "last_close_time": self.last_close_time,
            "modules": list(self.modules),
        }
        for name in MODULES:
            if name in self.modules:
                module = getattr(self, name)
                result[name] = module.to_dict()
        result["signal"] = self.signal.to_dict()
        return result


def normalise_modules(modules: Iterable[str] | None) -> tuple[str, ...]:
    """Requested module names in canonical order; ``None`` means all of them."""
    if modules is None:
        return MODULES
    requested = set(modules)
    unknown = sorted(requested - set(MODULES))
    if unknown:
        raise ValueError(f"unknown module(s) {', '.join(unknown)}; expected some of {', '.join(MODULES)}")
    return tuple(name for name in MODULES if name in requested)


class _SharedWork:
    """Lazily computed inputs several modules need, computed at most once per run."""

    def __init__(self, candles: Candles, trades: Trades | None, params: AnalysisParams) -> None:
        self.candles = candles
        self.trades = trades
        self.params = params
        self._tables: PriceTables | None = None
        self._swings: dict[int, Swings] = {}
        self._atr: dict[int, FloatArray] = {}
        self._deltas: BarDelta | None = None

    @property
    def tables(self) -> PriceTables:
        if self._tables is None:
            c = self.candles
            self._tables = PriceTables(c.high, c.low, c.close)
        return self._tables

    def swings(self, length: int) -> Swings:
        if length not in self._swings:
            c, tables = self.candles, self.tables
            self._swings[length] = detect_swings(
                c.high, c.low, length, high_table=tables.high_max, low_table=tables.low_min
            )
        return self._swings[length]

    def atr(self, period: int) -> FloatArray:
        if period not in self._atr:
            self._atr[period] = atr(self.candles.high, self.candles.low, self.candles.close, period)
        return self._atr[period]

    @property
    def deltas(self) -> BarDelta:
        if self._deltas is None:
            self._deltas = bar_delta(self.candles, self.trades, self.params.cvd.estimate_method)
        return self._deltas


def analyze(
    candles: Candles,
    trades: Trades | None = None,
    modules: Iterable[str] | None = None,
    params: AnalysisParams | None = None,
    *,
    liquidations: Liquidations | None = None,
) -> AnalysisResult:
    """Run the requested modules (all by default) and the signal on the last closed bar.

    Raises ``ValueError`` for unknown module names; parameter objects validate themselves on construction.
    """
    names = normalise_modules(modules)
    p = params or AnalysisParams()
    shared = _SharedWork(candles, trades, p)
    results: dict[str, Any] = {}
    if "indicators" in names:
        ip = p.indicators
        results["indicators"] = compute_indicators(candles, ip, precomputed_atr=shared.atr(ip.atr_period))
    if "smc" in names:
        sp = p.smc
        results["smc"] = compute_smc(
            candles, sp, tables=shared.tables, swings=shared.swings(sp.swing_length), atr=shared.atr(sp.atr_period)
        )
    if "fibonacci" in names:
        fp = p.fibonacci
        results["fibonacci"] = compute_fibonacci(candles, fp, swings=shared.swings(fp.swing_length))
    if "cvd" in names:
        cp = p.cvd
        results["cvd"] = compute_cvd(candles, trades, cp, swings=shared.swings(cp.swing_length), deltas=shared.deltas)
    if "orderflow" in names:
        op = p.orderflow
        results["orderflow"] = compute_orderflow(
            candles, trades, op, liquidations=liquidations, deltas=shared.deltas, atr=shared.atr(op.atr_period)
        )
    signal_atr = shared.atr(p.indicators.atr_period)
    result = AnalysisResult(
        interval_ms=candles.interval_ms,
        bar_count=len(candles),
        first_open_time=int(candles.open_time[0]),
        last_close_time=int(candles.close_time[-1]),
        modules=names,
        signal=compute_signal(candles, signal_atr, p.signal, **results),
        **results,
    )
    if p.signal.calibrated:
        # Imported here: the learned signal builds on the series package, which runs this module's analyze.
        from app.analytics.learned import calibrated_signal  # noqa: PLC0415

        result = replace(result, signal=calibrated_signal(candles, result, p, signal_atr))
    return result
