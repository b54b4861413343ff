"""A backtest start to finish as a plain function of bytes (what an analysis worker runs), and its document: the
same for `POST /v1/alerts/test` and `deltaflow alerts test`. No FastAPI, Redis or settings here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from app.alerts.backtest import Firing, backtest
from app.alerts.conditions import parse_condition
from app.alerts.evaluator import describe_condition
from app.alerts.frequency import Frequency
from app.analytics.model import KnownPredictions
from app.analytics.types import Candles
from app.signals import replay_memory
from app.signals.compute import candles_from_rows, iso


@dataclass(frozen=True, slots=True)
class BacktestSpec:
    venue: str
    symbol: str
    timeframe: str
    interval_ms: int
    condition: dict[str, Any]  # canonical (already validated)
    frequency: str
    cooldown_bars: int
    bars: int  # closed bars evaluated (the newest ones)
    warmup: int  # closed bars before them that only feed the analysis
    window: int  # the live analysis window (`signal_bars`)


def _firing(firing: Firing) -> dict[str, Any]:
    snapshot = firing.snapshot
    return {
        "bar_ms": snapshot.close_time,
        "bar_time": iso(snapshot.close_time),
        "close": snapshot.close,
        "bias": snapshot.bias,
        "score": snapshot.score,
        "sentence": firing.sentence,
    }


def _newest(candles: Candles, count: int) -> Candles:
    """The newest `count` bars (all of them when there are fewer)."""
    if len(candles) <= count:
        return candles

    def cut(column: Any) -> Any:
        return None if column is None else column[-count:]

    return Candles(
        open_time=candles.open_time[-count:], open=candles.open[-count:], high=candles.high[-count:],
        low=candles.low[-count:], close=candles.close[-count:], volume=candles.volume[-count:],
        taker_buy_volume=cut(candles.taker_buy_volume), trade_count=cut(candles.trade_count),
        interval_ms=candles.interval_ms,
    )  # fmt: skip


def backtest_document(candles: Candles, spec: BacktestSpec, known: KnownPredictions | None = None) -> dict[str, Any]:
    """Replay the rule over the newest `spec.bars` of `candles` (closed, oldest first), after up to `spec.warmup`
    bars of warm-up before them; `known` as for `backtest`."""
    # Widest parse bounds: the condition was validated against the configured ones by the caller.
    condition = parse_condition(spec.condition, max_depth=64, max_nodes=10_000)
    used = _newest(candles, spec.bars + spec.warmup)
    # The warm-up comes first: with fewer bars than asked for, fewer are evaluated (never without a warm-up).
    warmup = min(spec.warmup, len(used))
    firings = backtest(
        condition,
        used,
        frequency=Frequency(spec.frequency),
        cooldown_bars=spec.cooldown_bars,
        window=spec.window,
        warmup=warmup,
        known=known,
    )
    evaluated = len(used) - warmup
    first = int(used.close_time[warmup]) if evaluated else None
    last = int(used.close_time[-1]) if evaluated else None
    return {
        "venue": spec.venue,
        "symbol": spec.symbol,
        "timeframe": spec.timeframe,
        "description": describe_condition(condition),
        "frequency": spec.frequency,
        "cooldown_bars": spec.cooldown_bars,
        "bars": evaluated,
        "warmup_bars": warmup,
        "from_ms": first,
        "to_ms": last,
        "from": None if first is None else iso(first),
        "to": None if last is None else iso(last),
        "firings": [_firing(firing) for firing in firings],
    }


def run_backtest(raw_candles: bytes, spec: BacktestSpec, memory: bytes | None = None) -> bytes:
    """The encoded document over stored candle JSON (`read_candles_json`: oldest first, the forming bar last and
    never used); `memory`: the feed's track-record replay memory (`app.signals.replay_memory`), if any."""
    rows = [row for row in orjson.loads(raw_candles) if row["closed"]]
    if not rows:
        return orjson.dumps(None)
    document = backtest_document(candles_from_rows(rows, spec.interval_ms), spec, replay_memory.decode(memory))
    return orjson.dumps(document)
