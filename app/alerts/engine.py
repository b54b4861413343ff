"""Alert evaluation at every bar close, exactly once across instances (issue 15, item 4; the outbox write of item 5).

Every instance runs one engine (`start_alert_engine`, from the app lifespan; `DELTAFLOW_ALERTS_EVALUATE`). It knows
the markets (venue, symbol, timeframe) that have enabled rules and follows their feeds' bar-close channels
(``md:{venue:symbol}:closed``, announced by ingestion for every timeframe a newest bar closes on). A close of a
market, announced or found by the periodic sweep, is processed in order with the market's earlier closes:

1. the newest `alert_sweep_bars` stored closed bars are listed, and those without a done mark are taken oldest
   first (a close evaluated before an earlier one would make the earlier one's rules refuse it);
2. each is claimed in Redis (`app/alerts/claims.py`); a close held by another instance stops the walk (it is
   being evaluated; the later ones wait for it, and the next announcement or sweep resumes);
3. the rules' fire state is read (the parsed definitions come from the per-process `RuleCache`); when no rule takes
   part in the close nothing more is done, else the closed bar is analysed once in the analysis worker pool
   (`app/alerts/closed_bar.py`; the previous bar's snapshot comes from Redis, or is analysed with it);
4. every rule is evaluated and stepped at once (pure: `app/alerts/firing.py` over the market's conditions compiled
   into one `circuit.py`), the firings' sentences built in batches with yields to the event loop; ONE transaction
   advances the market's cursor with compare-and-set and writes the new state of the rules whose state moved, the
   events and their outbox rows;
5. after the commit the close is marked done and the events are published to the tenants' streams.

A lost announcement (a reconnect of the pub/sub connection, a close while this instance was down) is found by the
sweep, every `alert_sweep_seconds`; a holder killed mid-close leaves a claim that expires without a done mark, and
the next sweep of any instance evaluates the close. Two evaluations of one close (a stalled holder outliving its
claim) never give two events: the database refuses the second (the cursor's compare-and-set, unique (rule, bar)).

Decisions: a rule takes part in the closes after it was created, until its expiry (compared with the bar's close
time), see `firing.py`. The destination is read with the rule's definition: an edit of the destination racing a
close may send that close's event to the previous destination. The engine's background tasks run only with
`background_jobs` (tests drive the engine through `app.state.alert_engine`).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any, TypeVar

from fastapi import FastAPI
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.alerts import firing_repository as repository
from app.alerts.claims import ClaimOutcome, Claims, generation
from app.alerts.closed_bar import ClosedBar, closed_bar_snapshots
from app.alerts.evaluator import BarSnapshot
from app.alerts.events import FiredEvent, publish_events
from app.alerts.firing import describe_firings, participants, plan_close
from app.alerts.rule_cache import Market, RuleCache
from app.alerts.snapshot_json import snapshot_from_document
from app.config import Settings
from app.core.logging import get_logger
from app.core.metrics import ALERT_CLOSE_TO_COMMIT, ALERT_EVALUATIONS
from app.core.redis import RedisClient
from app.market.aggregation import TIMEFRAMES
from app.market.keys import FeedKeys, InvalidFeed
from app.market.store import read_candles_json
from app.market.tasks import cancel_and_wait
from app.trading.service import AnalysisRunner

log = get_logger(__name__)
R = TypeVar("R")

_EVALUATED = ALERT_EVALUATIONS.labels("evaluated")
_FIRED = ALERT_EVALUATIONS.labels("fired")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AlertEngine:
    def __init__(
        self,
        settings: Settings,
        redis: RedisClient,
        sessions: async_sessionmaker[AsyncSession],
        runner: Callable[[], AnalysisRunner | None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.sessions = sessions
        self._runner = runner
        self.clock = clock
        self.claims = Claims(
            redis,
            claim_ttl_seconds=settings.alert_claim_ttl_seconds,
            done_ttl_seconds=settings.alert_done_ttl_seconds,
            snapshot_ttl_seconds=settings.alert_snapshot_ttl_seconds,
        )
        self.cache = RuleCache()
        self.markets: dict[tuple[str, str], set[str]] = {}  # feed → timeframes with enabled rules
        self._locks: dict[Market, asyncio.Lock] = {}
        self._running: dict[Market, asyncio.Task[None]] = {}
        self._again: set[Market] = set()
        self._slots = asyncio.Semaphore(settings.alert_max_concurrent_closes)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.evaluated_closes = 0  # closes this instance claimed and committed (tests read it)
        self.analyses = 0  # closed bars this instance analysed (tests read it)
        self.subscribed = asyncio.Event()  # set at every (re)subscription confirmed (tests await it)
        self._channel_map: tuple[object, dict[str, tuple[str, str]]] = (None, {})

    # ---- one market's closes ---------------------------------------------------------------------------------

    async def process_market(self, market: Market) -> list[FiredEvent]:
        """Evaluate the market's recent closes that are not done, oldest first; returns the committed events."""
        lock = self._locks.setdefault(market, asyncio.Lock())
        committed: list[FiredEvent] = []
        async with lock:
            venue, symbol, timeframe = market
            opens = await self._recent_closes(market)
            for open_ms, done in zip(opens, await self.claims.done(venue, symbol, timeframe, opens), strict=True):
                if done:
                    continue
                outcome, events = await self.evaluate_close(market, open_ms)
                if outcome is ClaimOutcome.HELD:
                    break  # another instance evaluates it; the later closes must wait for it
                committed += events
        return committed

    async def _recent_closes(self, market: Market) -> list[int]:
        venue, symbol, timeframe = market
        key = FeedKeys(venue, symbol).bars[timeframe]
        newest = await self.redis.zrange(key, -self.settings.alert_sweep_bars, -1, withscores=True)
        return [int(entry[1]) for entry in newest]

    async def evaluate_close(self, market: Market, open_ms: int) -> tuple[ClaimOutcome, list[FiredEvent]]:
        """Claim one close and evaluate it; (DONE or HELD, []) when it is not this instance's to evaluate."""
        venue, symbol, timeframe = market
        outcome = await self.claims.claim(venue, symbol, timeframe, open_ms)
        if outcome is not ClaimOutcome.CLAIMED:
            return outcome, []
        try:
            events = await self._evaluate(market, open_ms)
        except BaseException:
            # Given up at once (not left to expire): the next announcement or sweep retries the close.
            with suppress(Exception):
                await self.claims.release(venue, symbol, timeframe, open_ms)
            raise
        await self.claims.finish(venue, symbol, timeframe, open_ms)
        self.evaluated_closes += 1
        bar_ms = open_ms + TIMEFRAMES[timeframe]
        ALERT_CLOSE_TO_COMMIT.observe(max(0.0, time.time() - bar_ms / 1000))
        if events:
            _FIRED.inc(len(events))
            # After the commit (and the done mark): a stream never announces an event the history cannot return.
            # Best effort: a stream that misses the message catches up from the table.
            try:
                await publish_events(self.redis, events)
            except RedisError as exc:  # the events are committed; only their announcement failed
                log.warning("alerts.publish_failed", error=type(exc).__name__, events=len(events))
        return outcome, events

    async def _evaluate(self, market: Market, open_ms: int) -> list[FiredEvent]:
        venue, symbol, timeframe = market
        interval = TIMEFRAMES[timeframe]
        bar_ms = open_ms + interval
        rules_generation = await generation(self.redis, market)  # before the state: a later bump reloads again
        async with self.sessions() as session:
            state = await repository.market_state(session, venue, symbol, timeframe)
            rules = await self.cache.rules(session, market, state, rules_generation)
        if not len(participants(rules, state, bar_ms)[0]):
            return []
        current_doc, current, previous = await self._snapshots(market, open_ms)
        plan = plan_close(rules, state, current, previous, bar_ms, interval)
        batch = self.settings.alert_evaluate_batch
        for start in range(0, len(plan.pending), batch):
            await asyncio.sleep(0)  # let requests through between batches of sentences
            describe_firings(plan, rules, state, current, start, start + batch)
        _EVALUATED.inc(plan.evaluated)
        async with self.sessions() as session, session.begin():
            return await repository.commit_plan(session, market, plan, current_doc, self.clock())

    async def _snapshots(self, market: Market, open_ms: int) -> tuple[dict[str, Any], BarSnapshot, BarSnapshot | None]:
        """The closed bar's snapshot (as stored in events, and parsed) and the previous bar's."""
        venue, symbol, timeframe = market
        known = await self.claims.last_snapshot(venue, symbol, timeframe)
        known_close = None if known is None else int(known["close_time"])
        bars = self.settings.signal_bars
        limit = bars + self.settings.alert_sweep_bars + 2  # the window, its previous bar, newer bars, the forming one
        raw = await read_candles_json(self.redis, venue, symbol, timeframe, limit, max_limit=limit)
        spec = ClosedBar(venue, symbol, timeframe, TIMEFRAMES[timeframe], open_ms, bars, known_close)
        current_doc, previous_doc, use_known = await self._call(closed_bar_snapshots, raw, spec)
        self.analyses += 1
        if use_known:
            previous_doc = known
        if known_close is None or current_doc["close_time"] > known_close:
            await self.claims.keep_snapshot(venue, symbol, timeframe, current_doc)
        previous = None if previous_doc is None else snapshot_from_document(previous_doc)
        return current_doc, snapshot_from_document(current_doc), previous

    async def _call(self, function: Callable[..., R], *args: Any) -> R:
        """Off the event loop: in the app's analysis worker pool, or a thread when it is not running."""
        runner = self._runner()
        if runner is not None:
            return await runner.call(function, *args)
        return await asyncio.to_thread(function, *args)

    # ---- which markets, and when ------------------------------------------------------------------------------

    async def refresh_markets(self) -> None:
        async with self.sessions() as session:
            found = await repository.markets_with_rules(session)
        markets: dict[tuple[str, str], set[str]] = {}
        for venue, symbol, timeframe in found:
            if timeframe in TIMEFRAMES:
                markets.setdefault((venue, symbol), set()).add(timeframe)
        gone = [(v, s, tf) for (v, s), tfs in self.markets.items() for tf in tfs - markets.get((v, s), set())]
        self.cache.forget(gone)
        self.markets = markets

    async def sweep(self) -> list[FiredEvent]:
        """Refresh the markets and process every one (what the periodic sweep runs; tests call it directly)."""
        await self.refresh_markets()
        committed: list[FiredEvent] = []
        for (venue, symbol), timeframes in list(self.markets.items()):
            for timeframe in sorted(timeframes):
                try:
                    committed += await self.process_market((venue, symbol, timeframe))
                except Exception:
                    log.exception("alerts.close_failed", venue=venue, symbol=symbol, timeframe=timeframe)
        return committed

    def schedule(self, market: Market) -> None:
        """Process a market soon, in a task of its own; a request while it runs makes it run once more after."""
        if market in self._running:
            self._again.add(market)
            return
        self._running[market] = asyncio.create_task(
            self._run_market(market), name="alert-close", context=contextvars.Context()
        )

    async def _run_market(self, market: Market) -> None:
        try:
            while True:
                self._again.discard(market)
                try:
                    async with self._slots:
                        await self.process_market(market)
                except Exception:
                    venue, symbol, timeframe = market
                    log.exception("alerts.close_failed", venue=venue, symbol=symbol, timeframe=timeframe)
                if market not in self._again or self._stopping.is_set():
                    return
        finally:
            # Here, not in a done callback: between this task's last look at `_again` and its removal nothing
            # may run, or a request made in between would be lost.
            self._running.pop(market, None)

    # ---- background tasks --------------------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._sweep_forever(), name="alert-sweep"),
            asyncio.create_task(self._listen_forever(), name="alert-closes"),
        ]

    async def stop(self) -> None:
        self._stopping.set()
        for task in [*self._tasks, *self._running.values()]:
            await cancel_and_wait(task)

    async def _pause(self, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _sweep_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.refresh_markets()
                for (venue, symbol), timeframes in list(self.markets.items()):
                    for timeframe in timeframes:
                        self.schedule((venue, symbol, timeframe))
            except (
                RedisError,
                OSError,
                SQLAlchemyError,
            ) as exc:  # Redis or the database failing: the next sweep retries
                log.warning("alerts.sweep_failed", error=type(exc).__name__)
            except Exception:
                log.exception("alerts.sweep_failed")
            await self._pause(self.settings.alert_sweep_seconds)

    async def _listen_forever(self) -> None:
        poll = self.settings.alert_listen_poll_seconds
        while not self._stopping.is_set():
            try:
                await self._listen(poll)
            except (RedisError, OSError) as exc:
                log.warning("alerts.pubsub_lost", error=type(exc).__name__)
                await self._pause(poll)

    def _channels(self) -> dict[str, tuple[str, str]]:
        """The bar-close channel of every feed with rules (recomputed only when the markets change)."""
        if self._channel_map[0] is not self.markets:
            channels = {}
            for venue, symbol in self.markets:
                with suppress(InvalidFeed):
                    channels[FeedKeys(venue, symbol).bar_closed] = (venue, symbol)
            self._channel_map = (self.markets, channels)
        return self._channel_map[1]

    async def _listen(self, poll: float) -> None:
        pubsub = self.redis.pubsub()
        subscribed: set[str] = set()
        try:
            while not self._stopping.is_set():
                channels = self._channels()
                if added := channels.keys() - subscribed:
                    await pubsub.subscribe(*added)
                    subscribed |= added
                if removed := subscribed - channels.keys():
                    await pubsub.unsubscribe(*removed)
                    subscribed -= removed
                if not subscribed:  # nothing to follow yet (redis-py refuses to read an unsubscribed connection)
                    await self._pause(poll)
                    continue
                message = await pubsub.get_message(timeout=poll)
                if message is not None:
                    self._dispatch(message, channels)
        finally:
            with suppress(Exception):  # the connection may already be broken
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves this unannotated

    def _dispatch(self, message: dict[str, Any], channels: dict[str, tuple[str, str]]) -> None:
        feed = channels.get(_text(message.get("channel")))
        if feed is None:
            return
        timeframes = self.markets.get(feed, set())
        kind = _text(message.get("type"))
        if kind == "subscribe":
            self.subscribed.set()
            # (Re)subscribed: closes announced meanwhile are lost, so every timeframe of the feed catches up.
            for timeframe in timeframes:
                self.schedule((*feed, timeframe))
        elif kind == "message":
            timeframe = _text(message.get("data")).partition(":")[0]
            if timeframe in timeframes:
                self.schedule((*feed, timeframe))


async def start_alert_engine(
    app: FastAPI, settings: Settings, redis: RedisClient, sessions: async_sessionmaker[AsyncSession]
) -> Callable[[], Awaitable[None]]:
    """The process's engine as `app.state.alert_engine`; its tasks run when `alerts_evaluate` and `background_jobs`
    are on. Returns the matching shutdown coroutine. The analysis pool is the app's (created by the routers'
    lifespans, after this one: looked up at each close)."""
    engine = AlertEngine(settings, redis, sessions, runner=lambda: getattr(app.state, "analysis_runner", None))
    app.state.alert_engine = engine
    if settings.alerts_evaluate and settings.background_jobs:
        engine.start()
    return engine.stop
