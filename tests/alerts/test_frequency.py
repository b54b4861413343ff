"""The frequency / cooldown state machine: table-driven runs of condition results over consecutive closes."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.alerts.frequency import Decision, FireState, Frequency, step

BAR = 300_000  # 5 m


def run(results: list[bool], frequency: Frequency, cooldown: int = 0) -> tuple[list[int], list[bool], FireState]:
    """Feed one result per close; returns the indices that fired, the `disable` flags, and the final state."""
    state = FireState()
    fired: list[int] = []
    disabled: list[bool] = []
    for i, result in enumerate(results):
        decision = step(
            state, result=result, bar_close=(i + 1) * BAR, interval_ms=BAR, frequency=frequency, cooldown_bars=cooldown
        )
        state = decision.state
        disabled.append(decision.disable)
        if decision.fire:
            fired.append(i)
    return fired, disabled, state


T, F = True, False


@pytest.mark.parametrize(
    ("results", "frequency", "cooldown", "fired"),
    [
        ([F, T, T, F, T, T], Frequency.ON_CHANGE, 0, [1, 4]),
        ([T, T, F, T], Frequency.ON_CHANGE, 0, [0, 3]),  # true at the first evaluation fires
        ([F, T, T, F, T, T], Frequency.ONCE_PER_BAR, 0, [1, 2, 4, 5]),
        ([F, T, T, F, T, T], Frequency.ONCE, 0, [1]),
        ([T, T, T, T, T, T, T], Frequency.ONCE_PER_BAR, 2, [0, 3, 6]),  # two closes skipped after each fire
        ([T, F, T, F, T, F, T], Frequency.ON_CHANGE, 2, [0, 4]),  # the edge at 2 falls in the cooldown: spent
        ([T, F, T, F, T, F, T], Frequency.ON_CHANGE, 0, [0, 2, 4, 6]),
        ([T, T, F, F, F, T], Frequency.ON_CHANGE, 3, [0, 5]),
        ([F, F, F], Frequency.ONCE_PER_BAR, 0, []),
    ],
)
def test_runs(results: list[bool], frequency: Frequency, cooldown: int, fired: list[int]) -> None:
    assert run(results, frequency, cooldown)[0] == fired


def test_once_disables_the_rule_with_its_fire() -> None:
    fired, disabled, state = run([F, T, T], Frequency.ONCE)
    assert fired == [1]
    assert disabled == [False, True, True]
    assert state.last_fired_bar == 2 * BAR


def test_a_replayed_or_older_close_never_fires_again() -> None:
    state = FireState()
    first = step(state, result=True, bar_close=BAR, interval_ms=BAR, frequency=Frequency.ONCE_PER_BAR, cooldown_bars=0)
    assert first.fire
    for close in (BAR, BAR - 1):
        again = step(
            first.state, result=True, bar_close=close, interval_ms=BAR, frequency=Frequency.ONCE_PER_BAR,
            cooldown_bars=0,
        )  # fmt: skip
        assert again == Decision(fire=False, state=first.state)


def test_a_gap_in_closes_counts_the_bars_between_for_the_cooldown() -> None:
    fired = step(FireState(), result=True, bar_close=BAR, interval_ms=BAR, frequency=Frequency.ONCE_PER_BAR,
                 cooldown_bars=5)  # fmt: skip
    # The feed was down for six bars: the next close is past the cooldown.
    later = step(fired.state, result=True, bar_close=8 * BAR, interval_ms=BAR, frequency=Frequency.ONCE_PER_BAR,
                 cooldown_bars=5)  # fmt: skip
    assert later.fire
    inside = step(fired.state, result=True, bar_close=6 * BAR, interval_ms=BAR, frequency=Frequency.ONCE_PER_BAR,
                  cooldown_bars=5)  # fmt: skip
    assert not inside.fire


@given(
    results=st.lists(st.booleans(), max_size=60),
    frequency=st.sampled_from(list(Frequency)),
    cooldown=st.integers(0, 5),
)
def test_properties(results: list[bool], frequency: Frequency, cooldown: int) -> None:
    fired, _, state = run(results, frequency, cooldown)
    assert all(results[i] for i in fired), "only a close where the condition holds fires"
    assert all(b - a > cooldown for a, b in itertools.pairwise(fired)), "fires respect the cooldown"
    if frequency is Frequency.ONCE:
        assert len(fired) <= 1
    if frequency is Frequency.ON_CHANGE:
        assert all(i == 0 or not results[i - 1] for i in fired), "on_change fires on a rising edge only"
    if frequency is Frequency.ONCE_PER_BAR and cooldown == 0:
        assert fired == [i for i, result in enumerate(results) if result]
    # Replaying a prefix gives the same fires up to that close (the state carries everything).
    for cut in range(len(results)):
        assert run(results[:cut], frequency, cooldown)[0] == [i for i in fired if i < cut]
    assert state.last_result is (results[-1] if results else None)
