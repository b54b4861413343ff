"""AnalysisResult → the JSON document POST /v1/analyze returns.

With `include_series` every module is exactly its `to_dict()` (per-bar series included), plus `last`. Without
it (the default) per-bar series are left out: 100 000 candles with every module give ~48 MB with series and
~15 MB without (the event tables, complete either way, are most of the rest). `last` (the last bar's values)
is always present, and the footprint keeps only its last bar. The compact form is built directly from the
result's arrays rather than by trimming `to_dict()`, which would first convert every series to Python floats.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from app.analytics import AnalysisResult, CvdResult, IndicatorResult, OrderflowResult, SmcResult
from app.analytics.events import EventTable
from app.analytics.footprint import Footprint
from app.analytics.types import FloatArray, json_float

CVD_SERIES = (
    "buy_volume", "sell_volume", "delta", "delta_pct", "cvd", "intrabar_delta_min", "intrabar_delta_max",
)  # fmt: skip
INDICATOR_SERIES = (
    "sma", "ema", "rsi", "atr", "macd", "macd_signal", "macd_hist",
    "bollinger_upper", "bollinger_middle", "bollinger_lower", "vwap",
)  # fmt: skip


TableRenderer = Callable[[EventTable], Any]


def event_rows(table: EventTable) -> list[dict[str, Any]]:
    return table.to_dict()


def render(result: AnalysisResult, *, include_series: bool, table: TableRenderer = event_rows) -> dict[str, Any]:
    """The response document; `table` lays out each event table (rows here, columns in `columnar.py`)."""
    document: dict[str, Any] = {
        "interval_ms": result.interval_ms,
        "bar_count": result.bar_count,
        "first_open_time": result.first_open_time,
        "last_close_time": result.last_close_time,
        "modules": list(result.modules),
        "include_series": include_series,
    }
    if result.cvd is not None:
        document["cvd"] = _cvd(result.cvd, include_series, table)
    if result.orderflow is not None:
        document["orderflow"] = _orderflow(result.orderflow, include_series, table)
    if result.smc is not None:
        document["smc"] = _smc(result.smc, table)
    if result.fibonacci is not None:
        document["fibonacci"] = result.fibonacci.to_dict()
    if result.indicators is not None:
        document["indicators"] = _indicators(result.indicators, include_series)
    document["signal"] = result.signal.to_dict()
    return document


def _last(open_time: Any, columns: dict[str, FloatArray | None]) -> dict[str, Any]:
    last: dict[str, Any] = {"open_time": int(open_time[-1])}
    for name, column in columns.items():
        last[name] = None if column is None else json_float(column[-1])
    return last


def _smc(smc: SmcResult, table: TableRenderer) -> dict[str, Any]:
    if table is event_rows:
        return smc.to_dict()
    document = {"params": {name: getattr(smc.params, name) for name in smc.params.__slots__}, "trend": smc.trend()}
    return document | {name: table(getattr(smc, name)) for name in smc.TABLES}


def _cvd(cvd: CvdResult, include_series: bool, table: TableRenderer) -> dict[str, Any]:
    last = _last(cvd.open_time, {name: getattr(cvd, name) for name in CVD_SERIES})
    if include_series:
        return {**cvd.to_dict(), "divergences": table(cvd.divergences), "last": last}
    return {
        "params": {name: getattr(cvd.params, name) for name in cvd.params.__slots__},
        "side_source": cvd.side_source,
        "estimate_method": cvd.estimate_method,
        "unassigned_trades": cvd.unassigned_trades,
        "divergences": table(cvd.divergences),
        "last": last,
    }


def _indicators(indicators: IndicatorResult, include_series: bool) -> dict[str, Any]:
    last = _last(indicators.open_time, {name: getattr(indicators, name) for name in INDICATOR_SERIES})
    if include_series:
        return {**indicators.to_dict(), "last": last}
    return {"params": {name: getattr(indicators.params, name) for name in indicators.params.__slots__}, "last": last}


def _orderflow(orderflow: OrderflowResult, include_series: bool, table: TableRenderer) -> dict[str, Any]:
    footprint = orderflow.footprint
    if not include_series and footprint is not None:
        orderflow = dataclasses.replace(orderflow, footprint=last_bar(footprint))
    document = orderflow.to_dict()
    if table is not event_rows:
        document["absorption"] = table(orderflow.absorption)
    return document


def last_bar(footprint: Footprint) -> Footprint:
    """The footprint of the last bar alone (rows are in CSR layout: `offsets[b]:offsets[b + 1]` is bar b)."""
    bar = footprint.bar_open_time.shape[0] - 1
    rows = slice(int(footprint.offsets[bar]), int(footprint.offsets[bar + 1]))
    zones = footprint.zone_bar == bar
    return dataclasses.replace(
        footprint,
        bar_open_time=footprint.bar_open_time[bar:],
        offsets=np.array([0, rows.stop - rows.start], dtype=np.int64),
        level=footprint.level[rows],
        price=footprint.price[rows],
        bid=footprint.bid[rows],
        ask=footprint.ask[rows],
        ask_imbalance=footprint.ask_imbalance[rows],
        bid_imbalance=footprint.bid_imbalance[rows],
        bar_volume=footprint.bar_volume[bar:],
        bar_delta=footprint.bar_delta[bar:],
        bar_poc=footprint.bar_poc[bar:],
        zone_bar=np.zeros(int(zones.sum()), dtype=np.int64),
        zone_side=footprint.zone_side[zones],
        zone_low=footprint.zone_low[zones],
        zone_high=footprint.zone_high[zones],
    )
