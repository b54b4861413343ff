"""One stored-data signal, start to finish, as a plain function of bytes: what an analysis worker runs.

The input is the candle JSON exactly as :func:`app.market.store.read_candles_json` returns it (closed bars
oldest first, the forming bar last), so the only thing handed to a worker process is one bytes object; decoding,
the analytics and encoding all happen off the server's event loop. No FastAPI, Redis or settings here.

The encoded signal never carries a position size: sizing depends on the caller's equity and risk, so it is
applied per request to the cached, shared signal (:func:`apply_position_size`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from app.analytics import AnalysisParams, Candles, analyze
from app.analytics.signals import position_size

# Taker sides that are estimated rather than reported by the exchange (see app.analytics.cvd).
ESTIMATED_SOURCES = frozenset({"ohlcv_estimate"})


@dataclass(frozen=True, slots=True)
class SignalInput:
    """Which bars of a stored candle series a signal is computed on."""

    venue: str
    symbol: str
    timeframe: str
    interval_ms: int
    last_closed_open: int | None  # the newest closed bar to use (bars closing meanwhile are cut off)
    bars: int
    include_forming: bool


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def candles_from_rows(rows: list[dict[str, Any]], interval_ms: int) -> Candles:
    """Stored candle rows (the /v1/candles wire shape) → analytics candles, taker-buy volume and trade counts."""
    return Candles.from_arrays(
        open_time=np.array([r["t"] for r in rows], dtype=np.int64),
        open=[r["o"] for r in rows],
        high=[r["h"] for r in rows],
        low=[r["l"] for r in rows],
        close=[r["c"] for r in rows],
        volume=[r["v"] for r in rows],
        taker_buy_volume=[r["buy_v"] for r in rows],
        trade_count=[r["trades"] for r in rows],
        interval_ms=interval_ms,
    )


class BarNotStored(LookupError):
    """The bar a computation is keyed by is not among the stored bars read for it.

    A process learns of a closed bar from the bar-close channel, and may ask for it before it can read it (a
    replica behind its primary, a test that announces first). A document computed on older bars must not be cached
    under the newer bar's key, where it would stay for the bar's whole life: the caller re-reads the newest bar."""


def select_rows(rows: list[dict[str, Any]], spec: SignalInput) -> tuple[list[dict[str, Any]], bool]:
    """The closed bars up to ``last_closed_open`` (at most ``bars``), plus the forming bar when asked.

    Raises :class:`BarNotStored` when the bar ``last_closed_open`` names is not among ``rows``."""
    last = spec.last_closed_open
    used = [r for r in rows if r["closed"] and last is not None and r["t"] <= last][-spec.bars :]
    if last is not None and (not used or used[-1]["t"] != last):
        raise BarNotStored(f"bar {last} of {spec.venue}:{spec.symbol} {spec.timeframe} is not stored")
    if spec.include_forming:
        newer = [r for r in rows if not r["closed"] and (last is None or r["t"] > last)]
        if newer:
            return (used + newer[-1:])[-spec.bars :], True
    return used, False


def compute_signal(raw_candles: bytes, spec: SignalInput) -> bytes | None:
    """The encoded signal document (without ``feed``, which changes every request); None if there are no bars."""
    rows, forming = select_rows(orjson.loads(raw_candles), spec)
    if not rows:
        return None
    result = analyze(candles_from_rows(rows, spec.interval_ms), params=AnalysisParams())
    inputs = {
        name: {"side_source": module.side_source, "exact": module.side_source not in ESTIMATED_SOURCES}
        for name, module in (("cvd", result.cvd), ("orderflow", result.orderflow))
        if module is not None
    }
    as_of = result.last_close_time
    body = {
        "venue": spec.venue,
        "symbol": spec.symbol,
        "timeframe": spec.timeframe,
        "as_of": as_of,
        "as_of_iso": iso(as_of),
        "forming": forming,
        "bar_count": result.bar_count,
        "inputs": inputs,
        "signal": result.signal.to_dict(),
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def apply_position_size(document: bytes, account_equity: float, risk_pct: float) -> bytes:
    """The cached signal with ``levels.position_size`` for this caller (same formula as the analytics)."""
    body = orjson.loads(document)
    levels = body["signal"].get("levels")
    if levels is not None:
        levels["position_size"] = position_size(account_equity, risk_pct, levels["entry"], levels["stop"])
    return orjson.dumps(body)


def warm_up() -> None:
    """Run once per worker so its first real request does not pay for lazy imports and first-call setup."""
    row = {"t": 0, "o": 1.0, "h": 1.0, "l": 1.0, "c": 1.0, "v": 0.0, "buy_v": 0.0, "trades": 0, "closed": True}
    compute_signal(orjson.dumps([row]), SignalInput("sim", "WARMUP", "1m", 60_000, 0, 1, include_forming=False))
