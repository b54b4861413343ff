"""The Redis side of alert evaluation: who evaluates a close, which closes are done, the last snapshot per market,
and the rules' generation. Every key the engine uses is named here, each with its bound.

``{v:s}`` is ``{venue:symbol}`` (the market-data hash tag, so a close's claim and done mark share a slot with its
bars on a Redis Cluster); ``<tf>`` the timeframe, ``<open>`` the closed bar's open time (epoch ms):

- ``alerts:{v:s}:claim:<tf>:<open>``  STRING  the evaluating instance's token    PX ``alert_claim_ttl_seconds``
- ``alerts:{v:s}:done:<tf>:<open>``   STRING  ``1`` once the close committed     EX ``alert_done_ttl_seconds``
- ``alerts:{v:s}:snapshot:<tf>``      STRING  the last evaluated bar's snapshot  EX ``alert_snapshot_ttl_seconds``
- ``alerts:rules:generations``        HASH    ``<venue>:<symbol>:<tf>`` → counter   one field per market that
  bumped by every write of a rule of that market (a move bumps both)      ever had a rule (tiny)

A claim is taken with ``SET NX PX`` unless the close is done (one script, one round trip); the holder marks the
close done after its transaction committed and only then drops its claim. A holder that dies leaves a claim that
expires without a done mark: the next sweep of any instance takes the close over. A holder that outlives its claim
(a stall longer than the TTL) may see a second evaluation start; the database's compare-and-set on the market's
cursor (`alert_market_cursors`) and the unique (rule, bar) of `alert_events` keep that from adding events.
"""

from __future__ import annotations

import os
import secrets
from enum import Enum
from typing import Any

import orjson

from app.core.redis import RedisClient

GENERATIONS_KEY = "alerts:rules:generations"

# KEYS: done, claim. ARGV: token, claim TTL (ms). 0: done already; 1: claimed by this token; 2: held by another.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 2
"""
# KEYS: done, claim. ARGV: token, done TTL (s). The done mark first: the close must never look free in between.
_FINISH = """
redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""
# KEYS: claim. ARGV: token. Gives a claim up (the evaluation failed): the next sweep retries at once.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ClaimOutcome(Enum):
    DONE = 0
    CLAIMED = 1
    HELD = 2


def _base(venue: str, symbol: str) -> str:
    return f"alerts:{{{venue}:{symbol}}}"


def claim_key(venue: str, symbol: str, timeframe: str, open_ms: int) -> str:
    return f"{_base(venue, symbol)}:claim:{timeframe}:{open_ms}"


def done_key(venue: str, symbol: str, timeframe: str, open_ms: int) -> str:
    return f"{_base(venue, symbol)}:done:{timeframe}:{open_ms}"


def snapshot_key(venue: str, symbol: str, timeframe: str) -> str:
    return f"{_base(venue, symbol)}:snapshot:{timeframe}"


class Claims:
    def __init__(
        self, redis: RedisClient, *, claim_ttl_seconds: float, done_ttl_seconds: int, snapshot_ttl_seconds: int
    ):
        self.redis = redis
        # This process's claims (a restarted process is another holder); the pid tells an operator who holds one.
        self.token = f"{os.getpid()}:{secrets.token_hex(8)}"
        self._claim_ttl_ms = max(1, int(claim_ttl_seconds * 1000))
        self._done_ttl = done_ttl_seconds
        self._snapshot_ttl = snapshot_ttl_seconds

    async def claim(self, venue: str, symbol: str, timeframe: str, open_ms: int) -> ClaimOutcome:
        keys = (done_key(venue, symbol, timeframe, open_ms), claim_key(venue, symbol, timeframe, open_ms))
        found = await self.redis.eval(_CLAIM, 2, *keys, self.token, self._claim_ttl_ms)
        return ClaimOutcome(int(found))

    async def finish(self, venue: str, symbol: str, timeframe: str, open_ms: int) -> None:
        keys = (done_key(venue, symbol, timeframe, open_ms), claim_key(venue, symbol, timeframe, open_ms))
        await self.redis.eval(_FINISH, 2, *keys, self.token, self._done_ttl)

    async def release(self, venue: str, symbol: str, timeframe: str, open_ms: int) -> None:
        key = claim_key(venue, symbol, timeframe, open_ms)
        await self.redis.eval(_RELEASE, 1, key, self.token)

    async def done(self, venue: str, symbol: str, timeframe: str, opens: list[int]) -> list[bool]:
        """Which of the closes (by open time) are marked done."""
        if not opens:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for open_ms in opens:
                pipe.exists(done_key(venue, symbol, timeframe, open_ms))
            found = await pipe.execute()
        return [bool(n) for n in found]

    async def last_snapshot(self, venue: str, symbol: str, timeframe: str) -> dict[str, Any] | None:
        raw = await self.redis.get(snapshot_key(venue, symbol, timeframe))
        if not isinstance(raw, bytes):
            return None
        document: dict[str, Any] = orjson.loads(raw)
        return document

    async def keep_snapshot(self, venue: str, symbol: str, timeframe: str, document: dict[str, Any]) -> None:
        key = snapshot_key(venue, symbol, timeframe)
        await self.redis.set(key, orjson.dumps(document), ex=self._snapshot_ttl)


def _field(market: tuple[str, str, str]) -> str:
    return ":".join(market)


async def generation(redis: RedisClient, market: tuple[str, str, str]) -> int:
    """The market's rules generation (0 before any write)."""
    raw = await redis.hget(GENERATIONS_KEY, _field(market))
    return int(raw) if raw is not None else 0


async def bump_generations(redis: RedisClient, markets: set[tuple[str, str, str]]) -> None:
    """Tell every instance's rule cache that these markets' rules changed (AlertService calls it on create, update,
    delete): only those markets are reparsed. One field per market, so an edit never recompiles the others (for
    100 000 rules over 100 markets: one market's ~40 ms instead of every market's ~4 s of CPU)."""
    async with redis.pipeline(transaction=False) as pipe:
        for market in sorted(markets):
            pipe.hincrby(GENERATIONS_KEY, _field(market), 1)
        await pipe.execute()
