"""Combine module outputs into one signal on the last closed bar.

Each available module yields a component score in [-1, 1] with human-readable reasons:

* ``smc``: ``0.6 · trend + 0.4 · zone``; trend is +1/-1 for the direction of the latest BOS/CHoCH, zone is +1
  when the close sits inside an active (unbroken) bullish order block or fair value gap and no bearish one,
  -1 for the reverse.
* ``indicators``: the mean of close vs EMA (+1 above, -1 below), the sign of the MACD histogram and
  ``(RSI - 50) / 50``.
* ``cvd``: ``0.7 · clip(2 · Σdelta / Σvolume)`` over the last ``lookback_bars`` bars plus ``0.3`` times the
  direction of a divergence confirmed within them.
* ``orderflow``: ``0.6`` times the direction of the latest absorption within ``lookback_bars`` plus ``0.4`` when
  the close is above the value area (-0.4 below it).
* ``fibonacci``: +1 when an up leg has retraced into its 0.5-0.786 zone (a discount to buy), -1 for the mirror
  in a down leg, 0 otherwise.

``score`` is the weighted mean over the available components (weights in ``SignalWeights``). ``bias`` is long
when ``score ≥ bias_threshold``, short when ``≤ -bias_threshold``, else neutral. ``confidence`` is
``|score| x agreement x coverage``: agreement is the weight share of components pointing the score's way,
coverage the share of the total weight whose modules ran.

Levels (long; short mirrored): entry is the last close. The stop sits ``stop_atr_buffer · ATR`` below the
invalidating structure — the nearer of the latest swing low below entry and the top-most bottom of an active
bullish order block below entry — or ``fallback_stop_atr · ATR`` below entry when neither exists. Targets are the
nearest ``max_targets`` prices at least ``min_target_atr · ATR`` above entry among Fibonacci levels and
opposing liquidity not yet swept (swing highs, equal highs, previous day/week highs); levels at the same price
merge into one target naming every source. ``risk_reward`` uses the first target. With ``account_equity`` and
``risk_pct`` (percent of equity risked) the position size is ``equity · risk_pct / 100 / |entry - stop|``.

By default (``calibrated``, issue 19) the bias and confidence come from a model learned on the same bars
(``learned.py``): ``confidence`` is the calibrated probability that following the better side wins after fees over
the model's horizon, and the bias is neutral unless its expected return after fees is positive. With
``calibrated`` off, they are the threshold and the heuristic above (the signal before the model, kept for callers
that want it: it is a pure function of the components, with no warm-up of ~324 bars). Components, score and the
level rules are the same either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.analytics.bounds import bounded, check_bounds
from app.analytics.cvd import CvdResult
from app.analytics.events import EventTable
from app.analytics.fibonacci import FibonacciResult
from app.analytics.indicators import IndicatorResult
from app.analytics.model.calibrated import ModelParams
from app.analytics.model.verdict import ModelVerdict
from app.analytics.orderflow import OrderflowResult
from app.analytics.smc import SmcResult
from app.analytics.types import Candles, FloatArray, json_float

COMPONENTS = ("smc", "indicators", "cvd", "orderflow", "fibonacci")


@dataclass(frozen=True, slots=True)
class SignalWeights:
    # Weights are relative (the score is their weighted mean); 1000 leaves room for any scale, percent included.
    smc: float = bounded(0.30, ge=0, le=1000)
    indicators: float = bounded(0.25, ge=0, le=1000)
    cvd: float = bounded(0.20, ge=0, le=1000)
    orderflow: float = bounded(0.15, ge=0, le=1000)
    fibonacci: float = bounded(0.10, ge=0, le=1000)

    def __post_init__(self) -> None:
        check_bounds(self)
        if sum(getattr(self, name) for name in COMPONENTS) <= 0:
            raise ValueError("at least one signal weight must be positive")


@dataclass(frozen=True, slots=True)
class SignalParams:
    weights: SignalWeights = field(default_factory=SignalWeights)
    bias_threshold: float = bounded(0.15, gt=0, lt=1)
    lookback_bars: int = bounded(20, ge=1, le=10_000)
    stop_atr_buffer: float = bounded(0.5, ge=0, le=100)
    fallback_stop_atr: float = bounded(2.0, gt=0, le=100)
    max_targets: int = bounded(3, ge=1, le=20)
    min_target_atr: float = bounded(0.5, ge=0, le=100)
    # 10^15 is beyond any account in any quote currency; the bound only keeps the position size finite.
    account_equity: float | None = bounded(None, gt=0, le=10**15)
    risk_pct: float | None = bounded(None, gt=0, le=100)
    # Bias and confidence from the calibrated model (``learned.py``), learned from the analysed bars only; False: the
    # heuristic threshold and confidence above.
    calibrated: bool = True
    model: ModelParams = field(default_factory=ModelParams)

    def __post_init__(self) -> None:
        check_bounds(self)
        if (self.account_equity is None) != (self.risk_pct is None):
            raise ValueError("account_equity and risk_pct must be given together")


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    weight: float
    score: float
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "score": self.score, "reasons": list(self.reasons)}


@dataclass(frozen=True, slots=True)
class Target:
    price: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"price": self.price, "source": self.source}


@dataclass(frozen=True, slots=True)
class Levels:
    entry: float
    stop: float
    stop_reason: str
    targets: tuple[Target, ...]
    risk_reward: float | None
    position_size: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "stop": self.stop,
            "stop_reason": self.stop_reason,
            "targets": [target.to_dict() for target in self.targets],
            "risk_reward": self.risk_reward,
            "position_size": self.position_size,
        }


@dataclass(frozen=True, slots=True)
class Signal:
    open_time: int
    close_time: int
    bias: str
    score: float
    confidence: float
    components: tuple[Component, ...]
    levels: Levels | None
    model: ModelVerdict | None = None  # set when the bias and confidence are the calibrated model's

    def to_dict(self) -> dict[str, Any]:
        result = {
            "open_time": self.open_time,
            "close_time": self.close_time,
            "bias": self.bias,
            "score": self.score,
            "confidence": self.confidence,
            "components": [component.to_dict() for component in self.components],
            "levels": None if self.levels is None else self.levels.to_dict(),
        }
        if self.model is not None:
            result["model"] = self.model.to_dict()
        return result


def _inside(events: EventTable, price: float, direction: int) -> bool:
    rows = events.active() & (events.direction == direction) & (events.bottom <= price) & (price <= events.top)
    return bool(rows.any())


def _smc_component(smc: SmcResult, close: float) -> tuple[float, list[str]]:
    reasons = []
    trend = smc.trend()
    trend_score = {"bullish": 1.0, "bearish": -1.0}.get(trend or "", 0.0)
    if trend is not None:
        last_kind = smc.structure.kinds[int(smc.structure.kind[-1])].upper()
        reasons.append(f"latest structure break is a {trend} {last_kind}")
    zone = 0.0
    for direction, name in ((1, "bullish"), (-1, "bearish")):
        if _inside(smc.order_blocks, close, direction) or _inside(smc.fair_value_gaps, close, direction):
            zone += direction
            reasons.append(f"close is inside an active {name} order block or fair value gap")
    if not reasons:  # a score of 0 is explained too, never an empty list
        reasons.append("no confirmed structure break yet, and the close is in no active order block or fair value gap")
    return 0.6 * trend_score + 0.4 * zone, reasons


def _indicator_component(result: IndicatorResult, close: float) -> tuple[float, list[str]]:
    parts, reasons = [], []
    ema, hist, rsi = float(result.ema[-1]), float(result.macd_hist[-1]), float(result.rsi[-1])
    if math.isfinite(ema):
        parts.append(1.0 if close > ema else -1.0 if close < ema else 0.0)
        reasons.append(f"close {'above' if close > ema else 'at or below'} EMA({result.params.ema_period})")
    if math.isfinite(hist):
        parts.append(float(np.sign(hist)))
        reasons.append(f"MACD histogram {'positive' if hist > 0 else 'negative' if hist < 0 else 'flat'}")
    if math.isfinite(rsi):
        parts.append((rsi - 50.0) / 50.0)
        reasons.append(f"RSI({result.params.rsi_period}) {rsi:.1f}")
    if not parts:
        reasons.append(
            f"warming up: EMA({result.params.ema_period}), MACD and RSI({result.params.rsi_period}) need more bars "
            f"than the {len(result.ema)} available"
        )
    return (sum(parts) / len(parts) if parts else 0.0), reasons


def _recent_direction(events: EventTable, since_time: int) -> int:
    recent = np.flatnonzero(events.confirmed_time >= since_time)
    return int(events.direction[recent[-1]]) if recent.size else 0


def _cvd_component(cvd: CvdResult, lookback: int, since_time: int) -> tuple[float, list[str]]:
    delta = float(np.sum(cvd.delta[-lookback:]))
    volume = float(np.sum(cvd.buy_volume[-lookback:] + cvd.sell_volume[-lookback:]))
    pressure = float(np.clip(2 * delta / volume, -1, 1)) if volume > 0 else 0.0
    reasons = [f"net delta over the last {lookback} bars is {delta:+.4g} ({cvd.side_source})"]
    divergence = _recent_direction(cvd.divergences, since_time)
    if divergence:
        reasons.append(f"recent {'bullish' if divergence > 0 else 'bearish'} CVD divergence")
    return 0.7 * pressure + 0.3 * divergence, reasons


def _orderflow_component(flow: OrderflowResult, close: float, since_time: int) -> tuple[float, list[str]]:
    reasons = []
    absorbed = _recent_direction(flow.absorption, since_time)
    if absorbed:
        reasons.append(f"recent {'bullish' if absorbed > 0 else 'bearish'} absorption")
    placement = 0.0
    if close > flow.profile.value_area_high:
        placement = 1.0
        reasons.append("close above the value area")
    elif close < flow.profile.value_area_low:
        placement = -1.0
        reasons.append("close below the value area")
    else:
        reasons.append("close inside the value area")
    return 0.6 * absorbed + 0.4 * placement, reasons


def _fibonacci_component(fib: FibonacciResult, close: float) -> tuple[float, list[str]]:
    if fib.direction is None:
        return 0.0, ["no completed swing leg"]
    ratios = np.asarray(fib.params.retracements)
    pocket = fib.retracements[(ratios >= 0.5) & (ratios <= 0.786)]
    if pocket.size and pocket.min() <= close <= pocket.max():
        side = 1.0 if fib.direction == "up" else -1.0
        return side, [f"close is in the 0.5-0.786 retracement of the {fib.direction} leg"]
    return 0.0, [f"close is outside the 0.5-0.786 retracement of the {fib.direction} leg"]


def _stop(bias: int, entry: float, atr: float, params: SignalParams, smc: SmcResult | None) -> tuple[float, str]:
    candidates: list[tuple[float, str]] = []
    if smc is not None:
        swings = smc.swings
        side = 1 if bias < 0 else -1  # a long is invalidated below the latest swing low, a short above a high
        rows = np.flatnonzero((swings.direction == side) & ((swings.top - entry) * side > 0))
        if rows.size:
            candidates.append((float(swings.top[rows[-1]]), "swing"))
        blocks = smc.order_blocks
        edge = blocks.bottom if bias > 0 else blocks.top
        rows = np.flatnonzero(blocks.active() & (blocks.direction == bias) & ((entry - edge) * bias > 0))
        if rows.size:
            nearest = edge[rows].max() if bias > 0 else edge[rows].min()
            candidates.append((float(nearest), "order block"))
    if not candidates:
        return entry - bias * params.fallback_stop_atr * atr, f"{params.fallback_stop_atr} ATR (no structure)"
    level, source = max(candidates) if bias > 0 else min(candidates)
    return level - bias * params.stop_atr_buffer * atr, f"beyond the {source} at {level:.8g} plus ATR buffer"


def _targets(
    bias: int, entry: float, min_distance: float, smc: SmcResult | None, fib: FibonacciResult | None
) -> list[Target]:
    found: list[Target] = []
    if fib is not None:
        found += [Target(price, f"fibonacci {kind} {ratio}") for kind, ratio, price in fib.levels()]
    if smc is not None:
        for table in (smc.swings, smc.liquidity, smc.previous_levels):
            rows = np.flatnonzero(table.active() & (table.direction == bias))
            found += [Target(float(table.top[r]), table.kinds[int(table.kind[r])]) for r in rows]
    beyond = sorted(
        (target for target in found if (target.price - entry) * bias > min_distance),
        key=lambda target: (abs(target.price - entry), target.source),
    )
    merged: list[Target] = []
    for target in beyond:  # one target per price, naming every source that put a level there
        if merged and merged[-1].price == target.price:
            merged[-1] = Target(target.price, f"{merged[-1].source} + {target.source}")
        else:
            merged.append(target)
    return merged


def compute_signal(
    candles: Candles,
    atr: FloatArray,
    params: SignalParams | None = None,
    *,
    smc: SmcResult | None = None,
    indicators: IndicatorResult | None = None,
    cvd: CvdResult | None = None,
    orderflow: OrderflowResult | None = None,
    fibonacci: FibonacciResult | None = None,
) -> Signal:
    p = params or SignalParams()
    close = float(candles.close[-1])
    since_index = max(0, len(candles) - p.lookback_bars)
    since_time = int(candles.close_time[since_index])
    scored: list[tuple[str, tuple[float, list[str]]]] = []
    if smc is not None:
        scored.append(("smc", _smc_component(smc, close)))
    if indicators is not None:
        scored.append(("indicators", _indicator_component(indicators, close)))
    if cvd is not None:
        scored.append(("cvd", _cvd_component(cvd, p.lookback_bars, since_time)))
    if orderflow is not None:
        scored.append(("orderflow", _orderflow_component(orderflow, close, since_time)))
    if fibonacci is not None:
        scored.append(("fibonacci", _fibonacci_component(fibonacci, close)))
    components = tuple(
        Component(name, getattr(p.weights, name), float(np.clip(score, -1, 1)), tuple(reasons))
        for name, (score, reasons) in scored
    )
    used_weight = sum(component.weight for component in components)
    total_weight = sum(getattr(p.weights, name) for name in COMPONENTS)
    score = sum(c.weight * c.score for c in components) / used_weight if used_weight > 0 else 0.0
    sign = int(np.sign(score))
    agreeing = sum(c.weight for c in components if sign != 0 and np.sign(c.score) == sign)
    confidence = abs(score) * (agreeing / used_weight if used_weight else 0.0) * (used_weight / total_weight)
    bias = 1 if score >= p.bias_threshold else -1 if score <= -p.bias_threshold else 0
    levels = signal_levels(bias, close, float(atr[-1]), p, smc, fibonacci)
    return Signal(
        open_time=int(candles.open_time[-1]),
        close_time=int(candles.close_time[-1]),
        bias={1: "long", -1: "short", 0: "neutral"}[bias],
        score=float(np.clip(score, -1, 1)),
        confidence=float(np.clip(confidence, 0, 1)),
        components=components,
        levels=levels,
    )


def signal_levels(
    bias: int, close: float, last_atr: float, p: SignalParams, smc: SmcResult | None, fibonacci: FibonacciResult | None
) -> Levels | None:
    """Entry, stop and targets of a long (``bias`` 1) or short (-1) at ``close``; None when neutral or the ATR is
    still warming up."""
    if not bias or not math.isfinite(last_atr):
        return None
    stop, stop_reason = _stop(bias, close, last_atr, p, smc)
    targets = tuple(_targets(bias, close, p.min_target_atr * last_atr, smc, fibonacci)[: p.max_targets])
    risk = abs(close - stop)
    reward = abs(targets[0].price - close) if targets else None
    size = None
    if p.account_equity is not None and p.risk_pct is not None:
        size = position_size(p.account_equity, p.risk_pct, close, stop)
    return Levels(
        entry=close,
        stop=stop,
        stop_reason=stop_reason,
        targets=targets,
        risk_reward=json_float(reward / risk) if reward is not None and risk > 0 else None,
        position_size=size,
    )


def position_size(account_equity: float, risk_pct: float, entry: float, stop: float) -> float | None:
    """Units to trade so that a stop-out loses ``risk_pct`` percent of ``account_equity``; None without risk."""
    risk = abs(entry - stop)
    return account_equity * risk_pct / 100 / risk if risk > 0 else None
