"""Alert evaluation at bar close on both backends (real Postgres, embedded SQLite) and real Redis: a close fires the
right rules once, with their events, outbox rows and new fire state in one transaction; replays and second
instances add nothing; the frequencies over successive closes; expired and disabled rules never fire; a dead
holder's claim is taken over by the sweep; announcements drive the engine; rule edits reach its cache.

Bars are written to Redis as ingestion stores them (the closed-bars ZSET), with chosen closes, so conditions on
`close` decide exactly which closes hold."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from redis.asyncio import Redis
from sqlalchemy import select, update

from app.alerts import firing_repository
from app.alerts.claims import ClaimOutcome, claim_key, done_key, generation
from app.alerts.engine import AlertEngine
from app.alerts.evaluator import BarSnapshot
from app.alerts.events import events_channel, message_id
from app.alerts.firing import describe_firings, plan_close
from app.auth.scopes import Role
from app.core.migrations import upgrade_to_head
from app.keys.admin import ensure_tenant
from app.main import create_app
from app.market.keys import FeedKeys
from app.models import AlertEvent, AlertRule, WebhookDelivery
from app.models.alert_rule import AlertMarketCursor
from tests.alerts.conftest import insert_rule
from tests.conftest import TEST_REDIS_URL, make_settings, truncate_all
from tests.helpers import running
from tests.keys.conftest import key_maker

MARKET = ("binance", "BTCUSDT", "1m")
MINUTE = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE  # open time of the first seeded bar
HISTORY = 60  # bars before the evaluated ones (the analysis window is 50)
ALWAYS = {"field": "volume", "op": "gte", "value": 0}
ABOVE_100 = {"field": "close", "op": "gt", "value": 100}

Backend = tuple[FastAPI, AsyncClient]


@pytest.fixture
async def engine_backend(backend_url: str, redis_client: Redis) -> AsyncIterator[Backend]:
    settings = make_settings(
        database_url=backend_url,
        redis_url=TEST_REDIS_URL,
        background_jobs=False,  # the engine's tasks are off: tests drive it
        signal_bars=50,
        analyze_workers=0,  # analyses in a thread: no worker processes for a few small windows
        webhook_allow_private_destinations=True,
    )
    app = create_app(settings)
    async with running(app) as client:
        yield app, client
    if backend_url.startswith("postgresql"):
        await truncate_all(backend_url)


def engine_of(app: FastAPI) -> AlertEngine:
    engine: AlertEngine = app.state.alert_engine
    return engine


def row(open_ms: int, close: float) -> bytes:
    return orjson.dumps(
        {
            "t": open_ms,
            "o": close,
            "h": close + 1,
            "l": close - 1,
            "c": close,
            "v": 2.0,
            "buy_v": 1.0,
            "sell_v": 1.0,
            "delta": 0.0,
            "trades": 3,
            "vwap": close,
            "closed": True,
        }
    )


async def store_bar(redis: Redis, index: int, close: float, *, announce: bool = False) -> int:
    """Store bar `index` (after the history) as ingestion does; returns its open time."""
    open_ms = T0 + (HISTORY + index) * MINUTE
    keys = FeedKeys("binance", "BTCUSDT")
    await redis.zadd(keys.bars["1m"], {row(open_ms, close): open_ms})
    if announce:
        await redis.publish(keys.bar_closed, f"1m:{open_ms}")
    return open_ms


async def seed_history(redis: Redis) -> None:
    keys = FeedKeys("binance", "BTCUSDT")
    await redis.zadd(keys.bars["1m"], {row(T0 + i * MINUTE, 50.0 + i % 7): T0 + i * MINUTE for i in range(HISTORY)})
    # The history counts as evaluated: the engine looks back a few bars, and these are not under test.
    for i in range(HISTORY):
        await redis.set(done_key(*MARKET, T0 + i * MINUTE), "1")


def close_of(open_ms: int) -> int:
    return open_ms + MINUTE


def created_before(index: int) -> datetime:
    """A creation time before bar `index` (after the history) closed."""
    return datetime.fromtimestamp((T0 + (HISTORY + index) * MINUTE) / 1000, UTC)


async def tenant(app: FastAPI, name: str = "acme") -> uuid.UUID:
    async with app.state.session_factory() as session:
        owner = await ensure_tenant(session, name)
        await session.commit()
        return owner.id


async def events_of(app: FastAPI) -> list[AlertEvent]:
    async with app.state.session_factory() as session:
        query = select(AlertEvent).order_by(AlertEvent.bar_ms, AlertEvent.rule_name)
        return list((await session.execute(query)).scalars())


async def deliveries_of(app: FastAPI) -> list[WebhookDelivery]:
    async with app.state.session_factory() as session:
        return list((await session.execute(select(WebhookDelivery))).scalars())


async def rule_of(app: FastAPI, rule_id: uuid.UUID) -> AlertRule:
    async with app.state.session_factory() as session:
        rule: AlertRule | None = await session.get(AlertRule, rule_id)
        assert rule is not None
        return rule


async def cursor_of(app: FastAPI) -> int | None:
    async with app.state.session_factory() as session:
        query = select(AlertMarketCursor.last_bar_ms).where(
            AlertMarketCursor.venue == MARKET[0],
            AlertMarketCursor.symbol == MARKET[1],
            AlertMarketCursor.timeframe == MARKET[2],
        )
        found: int | None = (await session.execute(query)).scalar()
        return found


async def published_on(pubsub: Any, count: int) -> list[dict[str, Any]]:
    """The next `count` event documents published on a subscribed channel (within 5 s)."""
    documents: list[dict[str, Any]] = []
    async with asyncio.timeout(5.0):
        while len(documents) < count:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                documents.append(orjson.loads(message["data"]))
    return documents


async def test_a_close_fires_the_matching_rules_once_with_outbox_and_state(
    engine_backend: Backend, redis_client: Redis
) -> None:
    app, _ = engine_backend
    acme, other = await tenant(app), await tenant(app, "other")
    await seed_history(redis_client)
    since = {"created_at": created_before(0)}
    webhook = await insert_rule(app, acme, name="a webhook", condition=ALWAYS, frequency="once_per_bar", **since)
    own = await insert_rule(
        app, other, name="b own url", condition=ALWAYS, destination_type="url",
        destination_url="https://hooks.example/x", **since,
    )  # fmt: skip
    silent = await insert_rule(app, acme, name="c none", condition=ALWAYS, destination_type="none", **since)
    await insert_rule(app, acme, name="never", condition={"field": "close", "op": "gt", "value": 1e9}, **since)
    await insert_rule(app, acme, name="other timeframe", timeframe="5m", condition=ALWAYS, **since)
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(events_channel(acme))

    open_ms = await store_bar(redis_client, 0, 120.0)
    committed = await engine_of(app).process_market(MARKET)

    events = await events_of(app)
    assert [e.rule_name for e in events] == ["a webhook", "b own url", "c none"]
    assert {e.id for e in committed} == {e.id for e in events}
    assert all(e.bar_ms == close_of(open_ms) and e.timeframe == "1m" for e in events)
    assert events[0].snapshot["close"] == 120.0
    assert events[0].snapshot["close_time"] == close_of(open_ms)
    assert events[0].sentence == "volume ≥ 0 (2)"
    by_event = {d.alert_event_id: d for d in await deliveries_of(app)}
    assert set(by_event) == {events[0].id, events[1].id}  # none for the `none` destination
    assert by_event[events[0].id].url is None  # the tenant's webhook, as it is when delivered
    assert by_event[events[1].id].url == "https://hooks.example/x"
    assert by_event[events[0].id].message_id == message_id(events[0].id)
    assert by_event[events[0].id].event == "alert.fired"
    assert by_event[events[0].id].payload["id"] == str(events[0].id)
    state = await rule_of(app, webhook)
    assert (state.last_result, state.last_fired_bar_ms) == (True, close_of(open_ms))
    assert await cursor_of(app) == close_of(open_ms)  # the market's last bar evaluated, once for all its rules
    assert (await rule_of(app, silent)).last_fired_bar_ms == close_of(open_ms)
    assert (await rule_of(app, own)).enabled is True
    # Published after the commit, on the tenant's channel only: acme's two events.
    published = [document["rule_name"] for document in await published_on(pubsub, 2)]
    assert sorted(published) == ["a webhook", "c none"]
    await pubsub.aclose()  # type: ignore[no-untyped-call]

    # The same close again: announced twice, a second instance, or a claim lost and the close evaluated again.
    assert await engine_of(app).process_market(MARKET) == []
    second = AlertEngine(app.state.settings, redis_client, app.state.session_factory)
    assert await second.process_market(MARKET) == []
    await redis_client.delete(done_key(*MARKET, open_ms))  # as if the done mark had never been written
    outcome, again = await second.evaluate_close(MARKET, open_ms)
    assert outcome is ClaimOutcome.CLAIMED
    assert again == []
    assert len(await events_of(app)) == 3
    assert len(await deliveries_of(app)) == 2


async def test_two_evaluations_of_one_close_at_once_give_one_event_per_rule(
    engine_backend: Backend, redis_client: Redis
) -> None:
    """The database is the last line: two instances evaluating one close together (a holder that outlived its
    claim) commit one set of events between them."""
    app, _ = engine_backend
    acme = await tenant(app)
    await seed_history(redis_client)
    for name in ("r1", "r2", "r3"):
        await insert_rule(
            app, acme, name=name, condition=ALWAYS, frequency="once_per_bar", created_at=created_before(0)
        )
    open_ms = await store_bar(redis_client, 0, 120.0)
    settings = app.state.settings
    one, two = (AlertEngine(settings, redis_client, app.state.session_factory) for _ in range(2))
    # Past the claim (each evaluates as if it held it): only the database decides.
    results = await asyncio.gather(one._evaluate(MARKET, open_ms), two._evaluate(MARKET, open_ms))
    assert sum(len(r) for r in results) == 3  # split between them in any way, never doubled
    events = await events_of(app)
    assert len(events) == 3
    assert len({e.rule_id for e in events}) == 3
    assert len(await deliveries_of(app)) == 3


async def test_frequencies_and_cooldown_over_successive_closes(engine_backend: Backend, redis_client: Redis) -> None:
    app, _ = engine_backend
    acme = await tenant(app)
    await seed_history(redis_client)
    since = {"created_at": created_before(0), "condition": ABOVE_100}
    rules = {
        "once": await insert_rule(app, acme, name="once", frequency="once", **since),
        "on_change": await insert_rule(app, acme, name="on_change", frequency="on_change", **since),
        "once_per_bar": await insert_rule(app, acme, name="once_per_bar", frequency="once_per_bar", **since),
        "cooldown": await insert_rule(app, acme, name="cooldown", frequency="once_per_bar", cooldown_bars=2, **since),
    }
    closes = [90.0, 110.0, 120.0, 90.0, 110.0, 130.0, 140.0, 150.0]  # holds at bars 1, 2, 4, 5, 6, 7
    opens = []
    for index, close in enumerate(closes):
        opens.append(await store_bar(redis_client, index, close))
        await engine_of(app).process_market(MARKET)
    fired: dict[str, list[int]] = {name: [] for name in rules}
    for event in await events_of(app):
        fired[event.rule_name].append(opens.index(event.bar_ms - MINUTE))
    assert fired == {
        "once": [1],
        "on_change": [1, 4],
        "once_per_bar": [1, 2, 4, 5, 6, 7],
        "cooldown": [1, 4, 7],
    }
    once = await rule_of(app, rules["once"])
    assert once.enabled is False  # disabled itself after its fire
    assert once.last_fired_bar_ms == close_of(opens[1])
    assert await cursor_of(app) == close_of(opens[-1])
    assert engine_of(app).analyses == len(closes)  # one analysis per close (the previous snapshot kept in Redis)


async def test_expired_disabled_and_newer_rules_never_fire(engine_backend: Backend, redis_client: Redis) -> None:
    app, _ = engine_backend
    acme = await tenant(app)
    await seed_history(redis_client)
    open_ms = T0 + HISTORY * MINUTE
    common: dict[str, Any] = {"condition": ALWAYS, "frequency": "once_per_bar"}
    await insert_rule(
        app, acme, name="expired at the close", created_at=created_before(0),
        expires_at=datetime.fromtimestamp(close_of(open_ms) / 1000, UTC), **common,
    )  # fmt: skip
    await insert_rule(app, acme, name="disabled", created_at=created_before(0), enabled=False, **common)
    await insert_rule(
        app, acme, name="created after the close",
        created_at=datetime.fromtimestamp(close_of(open_ms) / 1000, UTC), **common,
    )  # fmt: skip
    live = await insert_rule(app, acme, name="live", created_at=created_before(0), **common)
    await store_bar(redis_client, 0, 120.0)
    await engine_of(app).process_market(MARKET)
    assert [e.rule_id for e in await events_of(app)] == [live]


async def test_a_dead_holders_claim_is_taken_over_by_the_sweep_in_order(
    engine_backend: Backend, redis_client: Redis
) -> None:
    app, _ = engine_backend
    acme = await tenant(app)
    await seed_history(redis_client)
    rule = await insert_rule(
        app, acme, name="every", condition=ALWAYS, frequency="once_per_bar", created_at=created_before(0)
    )
    first = await store_bar(redis_client, 0, 120.0)
    # An instance claimed the close and died before its commit: the claim stays until its TTL, with no done mark.
    await redis_client.set(claim_key(*MARKET, first), "dead-instance", px=60_000)
    engine = engine_of(app)
    assert await engine.sweep() == []
    second = await store_bar(redis_client, 1, 125.0)
    assert await engine.sweep() == []  # the later close waits for the earlier one (order decides on_change)
    assert await events_of(app) == []

    await redis_client.pexpire(claim_key(*MARKET, first), 1)  # the claim's TTL runs out
    while await redis_client.exists(claim_key(*MARKET, first)):  # noqa: ASYNC110 - expiry has no event to await
        await asyncio.sleep(0.002)
    committed = await engine.sweep()
    assert [e.bar_ms for e in committed] == [close_of(first), close_of(second)]
    assert [(e.rule_id, e.bar_ms) for e in await events_of(app)] == [(rule, close_of(first)), (rule, close_of(second))]
    assert await redis_client.exists(done_key(*MARKET, first), done_key(*MARKET, second)) == 2
    assert await engine.sweep() == []


async def test_an_announced_close_is_evaluated_by_the_listener(engine_backend: Backend, redis_client: Redis) -> None:
    app, _ = engine_backend
    acme = await tenant(app)
    await seed_history(redis_client)
    await insert_rule(app, acme, name="every", condition=ALWAYS, frequency="once_per_bar", created_at=created_before(0))
    engine = AlertEngine(
        # Only the announcement can drive it (the sweep runs once, at the start).
        app.state.settings.model_copy(update={"alert_sweep_seconds": 3600.0, "alert_listen_poll_seconds": 0.05}),
        redis_client,
        app.state.session_factory,
    )
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(events_channel(acme))
    engine.start()
    try:
        await asyncio.wait_for(engine.subscribed.wait(), timeout=5.0)
        open_ms = await store_bar(redis_client, 0, 120.0, announce=True)
        [document] = await published_on(pubsub, 1)
        assert document["bar_ms"] == close_of(open_ms)
    finally:
        await engine.stop()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert len(await events_of(app)) == 1


async def test_rule_edits_reach_the_engines_cache(engine_backend: Backend, redis_client: Redis) -> None:
    app, client = engine_backend
    admin = await key_maker(app, app.state.settings)(Role.ADMIN)
    await seed_history(redis_client)
    body = {"name": "above", "venue": "binance", "symbol": "BTCUSDT", "timeframe": "1m", "frequency": "once_per_bar"}
    created = await client.post("/v1/alerts", json={**body, "condition": ABOVE_100}, headers=admin.headers)
    assert created.status_code == 201, created.text
    rule_id = uuid.UUID(created.json()["id"])
    async with app.state.session_factory() as session, session.begin():  # created before the bars below
        await session.execute(update(AlertRule).where(AlertRule.id == rule_id).values(created_at=created_before(0)))
    engine = engine_of(app)
    await store_bar(redis_client, 0, 120.0)
    await engine.process_market(MARKET)
    loads = engine.cache.loads
    # A write to another market's rules bumps only that market's generation: this one is not reparsed.
    other = await client.post(
        "/v1/alerts", json={**body, "timeframe": "5m", "condition": ABOVE_100}, headers=admin.headers
    )
    assert other.status_code == 201, other.text
    assert await generation(redis_client, ("binance", "BTCUSDT", "5m")) == 1
    await store_bar(redis_client, 1, 130.0)
    await engine.process_market(MARKET)
    assert engine.cache.loads == loads  # unchanged rules: parsed once (the close fired, see the end)
    # Through the API (the generation is bumped) …
    edited = await client.patch(
        f"/v1/alerts/{rule_id}",
        json={"condition": {"field": "close", "op": "gt", "value": 1000}},
        headers=admin.headers,
    )
    assert edited.status_code == 200
    await store_bar(redis_client, 2, 140.0)
    await engine.process_market(MARKET)
    assert engine.cache.loads == loads + 1
    # … and behind its back (no bump: the changed `updated_at` alone reloads it).
    async with app.state.session_factory() as session, session.begin():
        await session.execute(
            update(AlertRule)
            .where(AlertRule.id == rule_id)
            .values(condition=ABOVE_100, updated_at=datetime.now(UTC), last_result=None)
        )
    await store_bar(redis_client, 3, 150.0)
    await engine.process_market(MARKET)
    fired = [e.bar_ms for e in await events_of(app)]
    assert fired == [close_of(T0 + (HISTORY + i) * MINUTE) for i in (0, 1, 3)]


async def test_the_embedded_backends_evaluate_closes_too(tmp_path: Path, memory_redis_url: str) -> None:
    """`deltaflow serve` with no configuration: SQLite and the in-process Redis (Lua claims, pub/sub)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/embedded.db"
    await asyncio.to_thread(upgrade_to_head, url)
    settings = make_settings(database_url=url, redis_url=memory_redis_url, background_jobs=False, signal_bars=50,
                             analyze_workers=0)  # fmt: skip
    app = create_app(settings)
    async with running(app):
        redis: Redis = app.state.redis
        acme = await tenant(app)
        await seed_history(redis)
        rule = await insert_rule(
            app, acme, name="every", condition=ALWAYS, frequency="once_per_bar", created_at=created_before(0)
        )
        pubsub = redis.pubsub()
        await pubsub.subscribe(events_channel(acme))
        open_ms = await store_bar(redis, 0, 120.0)
        committed = await engine_of(app).process_market(MARKET)
        assert [(e.rule_id, e.bar_ms) for e in committed] == [(rule, close_of(open_ms))]
        assert [document["rule_id"] for document in await published_on(pubsub, 1)] == [str(rule)]
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        assert await engine_of(app).process_market(MARKET) == []
        assert len(await events_of(app)) == 1


async def test_rules_edited_or_disabled_while_their_close_is_evaluated_are_left_alone(
    engine_backend: Backend, redis_client: Redis
) -> None:
    """Each written rule is compared with the state the plan read: an edit that reset it, or a disable, committed
    between the read and the close's transaction wins (no event, its state untouched); the other rules fire."""
    app, _ = engine_backend
    acme = await tenant(app)
    await seed_history(redis_client)
    common: dict[str, Any] = {"condition": ALWAYS, "frequency": "once_per_bar", "created_at": created_before(0)}
    edited, disabled, kept = [await insert_rule(app, acme, name=name, **common) for name in ("edited", "off", "kept")]
    first = await store_bar(redis_client, 0, 120.0)
    await engine_of(app).process_market(MARKET)  # every rule fired once: (True, first close)
    bar_ms = close_of(first) + MINUTE
    snapshot = BarSnapshot(close_time=bar_ms, bias="long", score=0.0, confidence=0.0, close=120.0, volume=2.0)
    async with app.state.session_factory() as session:
        state = await firing_repository.market_state(session, *MARKET)
        rules = await engine_of(app).cache.rules(session, MARKET, state, await generation(redis_client, MARKET))
    plan = plan_close(rules, state, snapshot, None, bar_ms, MINUTE)
    describe_firings(plan, rules, state, snapshot, 0, len(plan.pending))
    assert set(plan.firings) == {edited, disabled, kept}
    async with app.state.session_factory() as session, session.begin():  # meanwhile, through the API's writes
        await session.execute(update(AlertRule).where(AlertRule.id == edited).values(
            last_result=None, last_fired_bar_ms=None, updated_at=datetime.now(UTC)))  # fmt: skip
        await session.execute(update(AlertRule).where(AlertRule.id == disabled).values(enabled=False))
    async with app.state.session_factory() as session, session.begin():
        committed = await firing_repository.commit_plan(
            session, MARKET, plan, {"close_time": bar_ms}, datetime.now(UTC)
        )
    assert [e.rule_id for e in committed] == [kept]
    assert (await rule_of(app, kept)).last_fired_bar_ms == bar_ms
    reset = await rule_of(app, edited)
    assert (reset.last_result, reset.last_fired_bar_ms) == (None, None)
    assert (await rule_of(app, disabled)).last_fired_bar_ms == close_of(first)
    assert await cursor_of(app) == bar_ms
    # The same plan again (a second evaluation of the close): the cursor moved, nothing is written.
    async with app.state.session_factory() as session, session.begin():
        assert await firing_repository.commit_plan(session, MARKET, plan, {}, datetime.now(UTC)) == []
    assert [e.bar_ms for e in await events_of(app)].count(bar_ms) == 1
