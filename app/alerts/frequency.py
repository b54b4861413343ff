"""When a rule fires: the frequency and cooldown state machine, a pure function of (state, condition result).

- `once`: the first close where the condition holds fires, and the rule disables itself;
- `once_per_bar`: every close where it holds fires;
- `on_change` (default): a close where it holds after a close where it did not fires. A rule's first evaluation
  counts as "did not hold before": a rule created while its condition is already true fires at the next close
  rather than never (a `crosses_*` condition true at that close would otherwise be lost);
- `cooldown_bars` = N: after a fire, the next N closes never fire (the condition's result is still recorded, so an
  `on_change` edge that fell inside the cooldown is spent, not fired late).

Bars are identified by their close time (epoch ms); a bar at or before the last one evaluated is ignored, so a
replayed or duplicated close can never fire twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt


class Frequency(StrEnum):
    ONCE = "once"
    ONCE_PER_BAR = "once_per_bar"
    ON_CHANGE = "on_change"


@dataclass(frozen=True, slots=True)
class FireState:
    last_bar: int | None = None  # close time of the last bar evaluated
    last_result: bool | None = None  # the condition at that bar
    last_fired_bar: int | None = None  # close time of the last bar that fired


@dataclass(frozen=True, slots=True)
class Decision:
    fire: bool
    state: FireState
    disable: bool = False  # `once` after its fire: the rule turns itself off


def step(
    state: FireState,
    *,
    result: bool,
    bar_close: int,
    interval_ms: int,
    frequency: Frequency,
    cooldown_bars: int,
) -> Decision:
    """Decide one closed bar. `interval_ms` is the timeframe's bar length (cooldowns count bars, not wall time)."""
    if state.last_bar is not None and bar_close <= state.last_bar:
        return Decision(fire=False, state=state)
    recorded = FireState(last_bar=bar_close, last_result=result, last_fired_bar=state.last_fired_bar)
    if not result:
        return Decision(fire=False, state=recorded)
    if frequency is Frequency.ONCE and state.last_fired_bar is not None:
        return Decision(fire=False, state=recorded, disable=True)
    if frequency is Frequency.ON_CHANGE and state.last_result:
        return Decision(fire=False, state=recorded)
    if state.last_fired_bar is not None and cooldown_bars > 0:
        bars_since = (bar_close - state.last_fired_bar) // max(interval_ms, 1)
        if bars_since <= cooldown_bars:
            return Decision(fire=False, state=recorded)
    fired = FireState(last_bar=bar_close, last_result=True, last_fired_bar=bar_close)
    return Decision(fire=True, state=fired, disable=frequency is Frequency.ONCE)


# --- many rules at once ----------------------------------------------------------------------------------------

FREQUENCY_CODES = {Frequency.ONCE: 0, Frequency.ONCE_PER_BAR: 1, Frequency.ON_CHANGE: 2}
NEVER = -1  # `last_result` / `last_fired_bar` unknown (None) in the arrays below: bar close times are positive


@dataclass(frozen=True, slots=True)
class Decisions:
    fire: npt.NDArray[np.bool_]
    disable: npt.NDArray[np.bool_]
    changed: npt.NDArray[np.bool_]  # the stored state moves: the result differs from the last one, or fire/disable


def step_many(
    *,
    last_result: npt.NDArray[np.int8],
    last_fired_bar: npt.NDArray[np.int64],
    result: npt.NDArray[np.bool_],
    bar_close: int,
    interval_ms: int,
    frequency: npt.NDArray[np.int8],
    cooldown_bars: npt.NDArray[np.int64],
) -> Decisions:
    """`step` for many rules at one close, all past their last bar (the caller checks the market's cursor):
    `last_result` is 1, 0 or NEVER, `last_fired_bar` a close time or NEVER, `frequency` a FREQUENCY_CODES value.
    Each rule's new state is (bar_close, result, bar_close if fire else last_fired_bar); tested against `step`."""
    fired_before = last_fired_bar != NEVER
    once = frequency == FREQUENCY_CODES[Frequency.ONCE]
    bars_since = (bar_close - last_fired_bar) // max(interval_ms, 1)
    cooling = fired_before & (cooldown_bars > 0) & (bars_since <= cooldown_bars)
    held = (frequency == FREQUENCY_CODES[Frequency.ON_CHANGE]) & (last_result == 1)
    fire = result & ~(once & fired_before) & ~held & ~cooling
    disable = result & once
    changed = (last_result != result) | fire | disable
    return Decisions(fire=fire, disable=disable, changed=changed)
