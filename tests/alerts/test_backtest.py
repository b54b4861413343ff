"""Backtesting a rule: every bar's snapshot is the live one of its prefix, a replay of a prefix fires exactly as
the full replay up to that bar (real candles and synthetic walks), `POST /v1/alerts/test` over the stored bars and
`deltaflow alerts test` over stored or CSV candles."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from app.alerts.backtest import BarSnapshots, Firing, backtest, replay
from app.alerts.backtest_run import BacktestSpec, backtest_document
from app.alerts.conditions import parse_condition
from app.alerts.frequency import Frequency
from app.alerts.snapshot import snapshot_at_last_bar
from app.analytics import AnalysisParams, Candles, analyze
from app.auth.scopes import Role, Scope
from app.cli import main
from app.config import Settings, get_settings
from app.main import create_app
from app.market.aggregation import TIMEFRAMES
from app.market.keys import FeedKeys
from app.signals.compute import candles_from_rows
from app.signals.evaluate_cli import read_candles
from bench.synthetic import stored_walk
from tests.alerts.conftest import rule_body
from tests.analytics.real_data import cut_points, hourly_candles
from tests.analytics.synthetic import random_walk
from tests.conftest import TEST_REDIS_URL
from tests.helpers import running
from tests.keys.conftest import key_maker

RULES: list[dict[str, Any]] = [
    {"field": "rsi", "op": "crosses_above", "value": 60},
    {"any": [{"event": "bos", "direction": "bullish"}, {"event": "choch"}]},
    {"field": "bias", "op": "changes_to", "value": "long"},
    {"level": "fibonacci", "ratio": 0.618, "op": "crosses_below"},
    {"all": [{"field": "cvd", "op": "gt", "value": 0}, {"field": "delta", "op": "lt", "value": 0}]},
    {"any": [{"event": "liquidity_sweep"}, {"event": "fvg", "direction": "bearish"}]},
    {"level": "stop", "op": "crosses_below"},
    {"not": {"field": "bias", "op": "eq", "value": "neutral"}},
]
MODES = [(Frequency.ON_CHANGE, 0), (Frequency.ONCE_PER_BAR, 3), (Frequency.ONCE, 0), (Frequency.ONCE_PER_BAR, 0)]
WINDOW = 1000


def parsed(condition: dict[str, Any]) -> Any:
    return parse_condition(condition, max_depth=8, max_nodes=64)


def fired(firings: list[Firing]) -> list[tuple[int, str]]:
    return [(firing.index, firing.sentence) for firing in firings]


# ---- the snapshots ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["walk", "real"])
def test_every_bars_snapshot_is_the_live_snapshot_of_its_prefix(source: str) -> None:
    candles = random_walk(700) if source == "walk" else hourly_candles().head(2500)
    snapshots = BarSnapshots(candles, window=len(candles))
    with_events = 0
    for count in cut_points(len(candles), 24, minimum=1):
        prefix = candles.head(count)
        expected = snapshot_at_last_bar(analyze(prefix, params=AnalysisParams()), prefix)
        assert snapshots[count - 1] == expected, count
    # Not a vacuous comparison: the replay sees events, levels and indicator values on many bars.
    for t in range(len(candles)):
        with_events += bool(snapshots[t].events)
    assert with_events > len(candles) // 50
    assert any(snapshots[t].fibonacci and snapshots[t].stop is not None for t in range(len(candles)))


def bars_between(candles: Candles, start: int, end: int) -> Candles:
    return Candles.from_arrays(
        open_time=candles.open_time[start:end], open=candles.open[start:end], high=candles.high[start:end],
        low=candles.low[start:end], close=candles.close[start:end], volume=candles.volume[start:end],
        interval_ms=candles.interval_ms,
    )  # fmt: skip


def test_cvd_is_the_running_total_over_the_live_window() -> None:
    candles = random_walk(400)
    window = 120
    snapshots = BarSnapshots(candles, window=window)
    for end in (60, 120, 121, 250, 400):
        live = bars_between(candles, max(0, end - window), end)  # what the engine analyses at that close
        expected = snapshot_at_last_bar(analyze(live, params=AnalysisParams()), live)
        assert expected.cvd is not None
        assert snapshots[end - 1].cvd == pytest.approx(expected.cvd, rel=1e-9, abs=1e-9), end


# ---- the prefix property ------------------------------------------------------------------------------------


def _replays(candles: Candles, cuts: list[int]) -> int:
    """Check every rule and mode at every cut; returns how many firings the full replays had."""
    full_snapshots = BarSnapshots(candles, window=WINDOW)
    total = 0
    prefixes = {cut: BarSnapshots(candles.head(cut), window=WINDOW) for cut in cuts}
    for condition in RULES:
        tree = parsed(condition)
        for frequency, cooldown in MODES:
            interval = candles.interval_ms
            full = fired(
                replay(
                    tree, full_snapshots, frequency=frequency, cooldown_bars=cooldown, interval_ms=interval, start=10
                )
            )
            total += len(full)
            for cut in cuts:
                snapshots = prefixes[cut]
                prefix = fired(
                    replay(tree, snapshots, frequency=frequency, cooldown_bars=cooldown, interval_ms=interval, start=10)
                )
                assert prefix == [f for f in full if f[0] < cut], (condition, frequency, cooldown, cut)
    return total


def test_a_prefix_of_real_candles_fires_as_the_full_replay_up_to_its_last_bar() -> None:
    candles = hourly_candles().head(1200)
    total = _replays(candles, cut_points(len(candles), 6, minimum=20))
    assert total > 100  # the rules fire: the comparison is not between two empty lists


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    count=st.integers(12, 260),
    cut_at=st.floats(0, 1),
    rule=st.sampled_from(RULES),
    mode=st.sampled_from(MODES),
)
def test_a_prefix_of_a_walk_fires_as_the_full_replay_up_to_its_last_bar(
    seed: int, count: int, cut_at: float, rule: dict[str, Any], mode: tuple[Frequency, int]
) -> None:
    candles = random_walk(count, seed=seed % 10_000)
    cut = max(1, round(cut_at * count))
    frequency, cooldown = mode
    tree = parsed(rule)
    full = fired(backtest(tree, candles, frequency=frequency, cooldown_bars=cooldown, window=50, warmup=5))
    prefix = fired(backtest(tree, candles.head(cut), frequency=frequency, cooldown_bars=cooldown, window=50, warmup=5))
    assert prefix == [f for f in full if f[0] < cut]


def test_once_fires_at_most_once_and_the_warmup_is_never_evaluated() -> None:
    candles = random_walk(300)
    tree = parsed({"field": "volume", "op": "gte", "value": 0})
    every = backtest(tree, candles, frequency=Frequency.ONCE_PER_BAR, cooldown_bars=0, window=WINDOW, warmup=40)
    assert [f.index for f in every] == list(range(40, 300))
    assert every[0].sentence == f"volume ≥ 0 ({every[0].snapshot.volume:.6g})"
    once = backtest(tree, candles, frequency=Frequency.ONCE, cooldown_bars=0, window=WINDOW, warmup=40)
    assert [f.index for f in once] == [40]
    cooled = backtest(tree, candles, frequency=Frequency.ONCE_PER_BAR, cooldown_bars=4, window=WINDOW, warmup=40)
    assert [f.index for f in cooled] == list(range(40, 300, 5))
    # on_change counts the first evaluated bar's predecessor as false: it fires there, then never again.
    changed = backtest(tree, candles, frequency=Frequency.ON_CHANGE, cooldown_bars=0, window=WINDOW, warmup=40)
    assert [f.index for f in changed] == [40]
    assert backtest(tree, candles.head(30), frequency=Frequency.ONCE, cooldown_bars=0, window=WINDOW, warmup=40) == []


# ---- POST /v1/alerts/test -----------------------------------------------------------------------------------

STORED = 400
TEST_SETTINGS: dict[str, object] = {
    "alert_test_default_bars": 200,
    "alert_test_max_bars": 300,
    "alert_test_warmup_bars": 50,
    "analyze_workers": 0,  # replays run in a thread here: no worker processes on the shared machine
    "alerts_evaluate": False,
}


def stored_rows(timeframe: str = "5m", count: int = STORED) -> list[dict[str, Any]]:
    return stored_walk(count, interval_ms=TIMEFRAMES[timeframe], end_ms=1_796_000_000_000, seed=3, step=30, wick=5)


async def seed(redis: Redis, rows: list[dict[str, Any]], timeframe: str = "5m", symbol: str = "BTCUSDT") -> None:
    await redis.zadd(FeedKeys("binance", symbol).bars[timeframe], {orjson.dumps(r): r["t"] for r in rows})


@pytest.fixture
async def tester(settings: Settings) -> AsyncIterator[tuple[FastAPI, AsyncClient, dict[str, str]]]:
    app = create_app(settings.model_copy(update=TEST_SETTINGS))
    async with running(app) as client:
        reader = await key_maker(app, app.state.settings)(Role.READER)
        yield app, client, reader.headers


def spec_for(body: dict[str, Any], bars: int) -> BacktestSpec:
    return BacktestSpec(
        venue="binance", symbol="BTCUSDT", timeframe=body["timeframe"], interval_ms=TIMEFRAMES[body["timeframe"]],
        condition=body["condition"], frequency=body.get("frequency", "on_change"),
        cooldown_bars=body.get("cooldown_bars", 0), bars=bars, warmup=50, window=1000,
    )  # fmt: skip


async def test_the_route_lists_the_bars_the_replay_of_the_stored_closed_bars_finds(
    tester: tuple[FastAPI, AsyncClient, dict[str, str]], redis_client: Redis
) -> None:
    app, client, headers = tester
    rows = stored_rows()
    await seed(redis_client, rows)
    # A forming bar (never evaluated) with a volume no closed bar has.
    forming = {**rows[-1], "t": rows[-1]["t"] + TIMEFRAMES["5m"], "v": 1e9, "closed": False}
    await redis_client.set(FeedKeys("binance", "BTCUSDT").forming["5m"], orjson.dumps(forming))

    every = rule_body(condition={"field": "volume", "op": "gte", "value": 0}, frequency="once_per_bar")
    response = await client.post("/v1/alerts/test", json=every, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["bars"], body["warmup_bars"]) == (200, 50)  # the default, after 50 bars of warm-up
    closes = [r["t"] + TIMEFRAMES["5m"] for r in rows[-200:]]
    assert [f["bar_ms"] for f in body["firings"]] == closes
    assert (body["from_ms"], body["to_ms"]) == (closes[0], closes[-1])
    assert body["description"] == "volume ≥ 0"
    huge = rule_body(condition={"field": "volume", "op": "gt", "value": 1e8}, frequency="once_per_bar")
    assert (await client.post("/v1/alerts/test", json=huge, headers=headers)).json()["firings"] == []

    # Exactly the pure replay of the same closed bars, for a rule that fires now and then.
    crossing = rule_body(condition={"field": "rsi", "op": "crosses_above", "value": 55}, cooldown_bars=2)
    crossing["bars"] = 120
    routed = (await client.post("/v1/alerts/test", json=crossing, headers=headers)).json()
    expected = backtest_document(candles_from_rows(rows, TIMEFRAMES["5m"]), spec_for(crossing, 120))
    assert routed == expected
    assert routed["firings"], "the rule fires on this walk"
    assert routed["firings"][0]["sentence"].startswith("RSI crossed above 55 (")

    capped = await client.post("/v1/alerts/test", json={**every, "bars": 100_000}, headers=headers)
    assert capped.json()["bars"] == 300  # DELTAFLOW_ALERT_TEST_MAX_BARS
    assert app.state.analysis_runner.workers == 0


async def test_the_route_refuses_what_post_alerts_refuses_alike(
    tester: tuple[FastAPI, AsyncClient, dict[str, str]], redis_client: Redis
) -> None:
    app, client, headers = tester
    admin = await key_maker(app, app.state.settings)(Role.ADMIN)
    bad = rule_body(symbol="NOPE", condition={"all": [{"field": "rsi", "op": "above", "value": 1}]})
    tested = await client.post("/v1/alerts/test", json=bad, headers=headers)
    created = await client.post("/v1/alerts", json=bad, headers=admin.headers)
    assert tested.status_code == created.status_code == 422
    assert tested.json()["type"] == "/problems/alert-rule-invalid"
    assert tested.json()["errors"] == created.json()["errors"]
    assert {e["pointer"] for e in tested.json()["errors"]} == {"#/condition/all/0/op", "#/symbol"}
    for extra in ({"bars": 0}, {"bars": "many"}, {"unknown": 1}):
        response = await client.post("/v1/alerts/test", json={**rule_body(), **extra}, headers=headers)
        assert response.status_code == 422, extra
    # A configured feed without a closed bar stored yet: nothing to replay.
    empty = await client.post("/v1/alerts/test", json=rule_body(), headers=headers)
    assert empty.status_code == 503
    assert empty.json()["type"] == "/problems/market-data-unavailable"


async def test_a_key_without_alerts_read_may_not_backtest(tester: tuple[FastAPI, AsyncClient, dict[str, str]]) -> None:
    app, client, _ = tester
    signals_only = await key_maker(app, app.state.settings)(Role.READER, scopes=frozenset({Scope.SIGNALS_READ}))
    response = await client.post("/v1/alerts/test", json=rule_body(), headers=signals_only.headers)
    assert response.status_code == 403


# ---- deltaflow alerts test ----------------------------------------------------------------------------------


def write_csv(path: Path, candles: Candles) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", "open", "high", "low", "close", "volume"])
        for row in zip(
            (candles.open_time // 1000).tolist(), candles.open.tolist(), candles.high.tolist(),
            candles.low.tolist(), candles.close.tolist(), candles.volume.tolist(), strict=True,
        ):  # fmt: skip
            writer.writerow(row)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DELTAFLOW_REDIS_URL", TEST_REDIS_URL)
    monkeypatch.setenv("DELTAFLOW_ALERT_TEST_WARMUP_BARS", "50")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_the_cli_replays_a_csv_as_the_route_would(
    tmp_path: Path, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    candles = hourly_candles().head(700)
    write_csv(tmp_path / "candles.csv", candles)
    condition = {
        "any": [{"event": "choch", "direction": "bullish"}, {"field": "rsi", "op": "crosses_below", "value": 30}]
    }
    (tmp_path / "rule.json").write_bytes(orjson.dumps({"condition": condition, "cooldown_bars": 1}))
    args = ["alerts", "test", "--rule-file", str(tmp_path / "rule.json"), "--venue", "binance", "--symbol", "BTCUSDT",
            "--timeframe", "1h", "--csv", str(tmp_path / "candles.csv"), "--bars", "600"]  # fmt: skip
    assert main([*args, "--json"]) == 0
    document = orjson.loads(capsys.readouterr().out)
    spec = BacktestSpec(
        venue="binance", symbol="BTCUSDT", timeframe="1h", interval_ms=TIMEFRAMES["1h"], condition=condition,
        frequency="on_change", cooldown_bars=1, bars=600, warmup=50, window=get_settings().signal_bars,
    )  # fmt: skip
    assert document == backtest_document(read_candles(tmp_path / "candles.csv"), spec)
    assert document["bars"] == 600
    assert document["firings"]

    assert main(args) == 0
    table = capsys.readouterr().out
    assert "binance:BTCUSDT 1h: bullish CHoCH or RSI crosses below 30 (on_change, cooldown 1 bars)" in table
    for firing in document["firings"]:
        assert f"{firing['bar_time']:<22}" in table
        assert firing["sentence"] in table

    # 4h bars from the hourly file: aggregated first.
    assert main([*args[:-4], "--timeframe", "4h", "--csv", str(tmp_path / "candles.csv"), "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["timeframe"] == "4h"


async def test_the_cli_replays_the_stored_bars(
    tmp_path: Path, cli_env: None, capsys: pytest.CaptureFixture[str], redis_client: Redis
) -> None:
    rows = stored_rows("15m", 150)
    await seed(redis_client, rows, "15m")
    rule = {"condition": {"field": "close", "op": "gt", "value": 0}, "frequency": "once_per_bar"}
    (tmp_path / "rule.json").write_bytes(orjson.dumps(rule))
    # In a thread: the command runs its own event loop, as it does from the shell.
    args = ["alerts", "test", "--rule-file", str(tmp_path / "rule.json"), "--venue", "binance", "--symbol", "BTCUSDT"]
    code = await asyncio.to_thread(main, [*args, "--timeframe", "15m", "--json"])
    output = capsys.readouterr()
    assert code == 0, output.err
    document = orjson.loads(output.out)
    assert [f["bar_ms"] for f in document["firings"]] == [r["t"] + TIMEFRAMES["15m"] for r in rows[50:]]
    # No bars of that timeframe stored: exit 2 with the reason.
    assert await asyncio.to_thread(main, [*args, "--timeframe", "4h"]) == 2
    assert "no closed 4h bars stored for binance:BTCUSDT" in capsys.readouterr().err


def test_an_invalid_rule_file_exits_2_pointing_at_the_node(
    tmp_path: Path, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rule.json").write_bytes(orjson.dumps({"condition": {"any": [{"event": "bos", "direction": "up"}]}}))
    code = main(["alerts", "test", "--rule-file", str(tmp_path / "rule.json"), "--venue", "binance", "--symbol",
                 "BTCUSDT", "--timeframe", "1m", "--csv", str(tmp_path / "missing.csv")])  # fmt: skip
    assert code == 2
    assert "#/condition/any/0/direction" in capsys.readouterr().err
    (tmp_path / "rule.json").write_text("{not json")
    assert main(["alerts", "test", "--rule-file", str(tmp_path / "rule.json"), "--venue", "binance", "--symbol",
                 "BTCUSDT", "--timeframe", "1m"]) == 2  # fmt: skip
