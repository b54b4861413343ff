"""Per-tenant rate limits: the shared token bucket, leases, local fallback, and the 429 problem over HTTP."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from redis.asyncio import Redis

from app.auth.errors import RateLimited
from app.auth.ratelimit import RateLimiter, RateLimitPolicy, bucket_key
from app.auth.scopes import Role
from app.config import Settings
from app.core.errors import PROBLEM_MEDIA_TYPE
from app.core.redis import RedisClient, create_redis
from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import free_port, running
from tests.keys.conftest import IssuedKey, MakeKey

NO_REFILL = 0.001  # one token per 1 000 s: counts in these tests are exact


@pytest.fixture(params=["redis", "memory"])
async def redis(request: pytest.FixtureRequest, redis_client: Redis) -> AsyncIterator[RedisClient]:
    """The real test Redis and the embedded one: the Lua lease runs on both."""
    if request.param == "redis":
        yield redis_client
        return
    client = create_redis(make_settings(redis_url=f"memory://rl-{uuid.uuid4().hex}"))
    yield client
    await client.aclose()


def limiter(redis: Redis, per_second: float, burst: int, lease_seconds: float = 60.0) -> RateLimiter:
    return RateLimiter(
        redis,
        RateLimitPolicy(per_second, burst),
        lease_seconds=lease_seconds,
        redis_timeout_seconds=0.5,
        max_tenants=100,
    )


async def spend_until_refused(
    limit: RateLimiter, tenant: uuid.UUID, attempts: int, policy: RateLimitPolicy | None = None
) -> int:
    granted = 0
    for _ in range(attempts):
        try:
            await limit.acquire(tenant, policy=policy)
        except RateLimited:
            continue
        granted += 1
    return granted


async def test_a_burst_is_granted_then_refused_with_the_wait(redis: Redis) -> None:
    limit, tenant = limiter(redis, NO_REFILL, 5), uuid.uuid4()
    remaining = [await limit.acquire(tenant) for _ in range(5)]
    assert remaining == [4, 3, 2, 1, 0]
    with pytest.raises(RateLimited) as refused:
        await limit.acquire(tenant)
    assert refused.value.status == 429
    assert refused.value.extensions["retry_after_seconds"] == 1000  # one token at 0.001 per second
    assert refused.value.headers["retry-after"] == "1000"


async def test_instances_share_one_bucket_and_never_grant_more_than_it_holds(redis: Redis) -> None:
    tenant = uuid.uuid4()
    first, second = limiter(redis, NO_REFILL, 10), limiter(redis, NO_REFILL, 10)
    granted = 0
    for _ in range(20):
        granted += await spend_until_refused(first, tenant, 1) + await spend_until_refused(second, tenant, 1)
    assert granted == 10
    other_tenant = uuid.uuid4()
    assert await spend_until_refused(second, other_tenant, 3) == 3  # tenants have their own buckets


async def test_the_bucket_refills_at_the_rate(redis: Redis) -> None:
    limit, tenant = limiter(redis, 20.0, 2), uuid.uuid4()
    await limit.acquire(tenant)
    await limit.acquire(tenant)
    with pytest.raises(RateLimited):
        await limit.acquire(tenant)
    await asyncio.sleep(0.12)  # 20 per second: a token every 50 ms
    await limit.acquire(tenant)


async def test_a_costly_request_takes_all_its_tokens_or_none(redis: Redis) -> None:
    limit, tenant = limiter(redis, NO_REFILL, 10), uuid.uuid4()
    await limit.acquire(tenant, 8)
    with pytest.raises(RateLimited):
        await limit.acquire(tenant, 5)
    assert await limit.acquire(tenant, 2) == 0  # the refused request spent nothing
    assert await limiter(redis, NO_REFILL, 4).acquire(uuid.uuid4(), 50) == 0  # capped at the burst


async def evalsha_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_busy_tenant_leases_in_growing_batches_and_a_refused_one_costs_no_redis_call(
    redis_client: Redis,
) -> None:
    limit, tenant = limiter(redis_client, 1000.0, 1000, lease_seconds=0.1), uuid.uuid4()  # at most 100 per lease
    before = await evalsha_calls(redis_client)
    for _ in range(900):
        await limit.acquire(tenant)
    calls = await evalsha_calls(redis_client) - before
    assert calls <= 20, calls  # 1 + 2 + 4 + … + 64, then 100 at a time: ~15 round trips for 900 requests

    starved, hammered = limiter(redis_client, NO_REFILL, 1), uuid.uuid4()
    await starved.acquire(hammered)
    with pytest.raises(RateLimited):
        await starved.acquire(hammered)
    before = await evalsha_calls(redis_client)
    for _ in range(50):
        with pytest.raises(RateLimited):
            await starved.acquire(hammered)
    assert await evalsha_calls(redis_client) - before == 0


async def test_a_costlier_request_is_told_to_wait_longer(redis_client: Redis) -> None:
    limit, tenant = limiter(redis_client, 1.0, 2), uuid.uuid4()
    await limit.acquire(tenant, 2)
    with pytest.raises(RateLimited) as single:
        await limit.acquire(tenant)
    with pytest.raises(RateLimited) as costly:  # remembered refusal: no Redis call, but its own wait
        await limit.acquire(tenant, 2)
    assert costly.value.extensions["retry_after_seconds"] > single.value.extensions["retry_after_seconds"]


async def test_every_tenant_stays_tracked_when_the_table_is_full_of_busy_ones(redis_client: Redis) -> None:
    limit = RateLimiter(
        redis_client, RateLimitPolicy(NO_REFILL, 1), lease_seconds=60, redis_timeout_seconds=0.5, max_tenants=2
    )
    for busy in (uuid.uuid4(), uuid.uuid4()):
        await limit.acquire(busy)  # refused from now on: neither is idle, the sweep frees nothing
    hammering = uuid.uuid4()
    await limit.acquire(hammering)
    with pytest.raises(RateLimited):
        await limit.acquire(hammering)
    before = await evalsha_calls(redis_client)
    for _ in range(20):
        with pytest.raises(RateLimited):
            await limit.acquire(hammering)
    assert await evalsha_calls(redis_client) - before == 0  # its refusal is remembered like any other's


async def test_alternating_budgets_with_redis_down_do_not_refill_the_local_bucket() -> None:
    unreachable = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    limit, tenant = limiter(unreachable, NO_REFILL, 4), uuid.uuid4()
    small, large = RateLimitPolicy(NO_REFILL, 4), RateLimitPolicy(NO_REFILL, 5)
    granted = 0
    for attempt in range(40):  # keys whose cached verifications straddle a budget change
        try:
            await limit.acquire(tenant, policy=small if attempt % 2 else large)
        except RateLimited:
            continue
        granted += 1
    assert granted <= 5
    await unreachable.aclose()


async def test_a_lowered_burst_caps_what_the_shared_bucket_still_holds(redis: Redis) -> None:
    limit, tenant = limiter(redis, NO_REFILL, 10), uuid.uuid4()
    await limit.acquire(tenant)  # the bucket holds 9 under the old budget
    lowered = RateLimitPolicy(NO_REFILL, 3)
    assert await spend_until_refused(limit, tenant, 10, lowered) == 3


async def test_a_lease_that_lapses_before_its_waiter_resumes_is_still_spent(redis_client: Redis) -> None:
    # Leases lapse after lease_seconds; a request that waited for one must get its token even when the event
    # loop resumed it later than that (a busy process), not loop and end in a spurious 429.
    hurried = limiter(redis_client, 100_000.0, 1_000_000, lease_seconds=0.000_001)
    tenant = uuid.uuid4()
    for _ in range(50):
        await hurried.acquire(tenant)


async def test_concurrent_requests_share_one_lease(redis_client: Redis) -> None:
    limit, tenant = limiter(redis_client, NO_REFILL, 100), uuid.uuid4()
    results = await asyncio.gather(*(limit.acquire(tenant) for _ in range(30)), return_exceptions=True)
    assert not [r for r in results if isinstance(r, BaseException)]
    tokens = await redis_client.hget(bucket_key(tenant), "tokens")
    assert tokens is not None
    assert 70 <= float(tokens) < 100  # what was leased, no more


async def test_with_redis_down_each_instance_enforces_the_policy_itself() -> None:
    unreachable = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    limit, tenant = limiter(unreachable, NO_REFILL, 3), uuid.uuid4()
    started = time.perf_counter()
    assert await spend_until_refused(limit, tenant, 10) == 3
    assert time.perf_counter() - started < 2  # one failed Redis call, not one per request
    await unreachable.aclose()


async def test_idle_tenants_are_forgotten_when_the_table_is_full(redis_client: Redis) -> None:
    limit = RateLimiter(
        redis_client, RateLimitPolicy(NO_REFILL, 2), lease_seconds=0.01, redis_timeout_seconds=0.5, max_tenants=3
    )
    first = [uuid.uuid4() for _ in range(3)]
    for tenant in first:
        await limit.acquire(tenant)
    await asyncio.sleep(0.02)  # their leases lapse: idle
    newcomer = uuid.uuid4()
    await limit.acquire(newcomer)
    assert set(limit._allowances) == {newcomer}
    await limit.acquire(first[0])  # a forgotten tenant's bucket lives on in Redis: the limit is not reset
    with pytest.raises(RateLimited):
        await limit.acquire(first[0])


# Over HTTP


@pytest.fixture
def tight_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"rate_limit_per_second": NO_REFILL, "rate_limit_burst": 3})


@pytest.fixture
def app(tight_settings: Settings) -> FastAPI:  # the make_key fixture builds on this app
    return create_app(tight_settings)


def _budget(response: Any) -> str:
    return str(response.headers["ratelimit"])


async def test_over_http_the_tenant_gets_429_problem_with_retry_after(client: AsyncClient, make_key: MakeKey) -> None:
    reader = await make_key(Role.READER)
    admin = await make_key(Role.ADMIN)  # same tenant: one budget for all its keys
    other = await make_key(Role.READER, tenant="globex")
    answers = [await client.get("/v1/me", headers=key.headers) for key in (reader, admin, reader)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [_budget(a) for a in answers] == ['"tenant";r=2;t=1000', '"tenant";r=1;t=2000', '"tenant";r=0;t=3000']
    assert answers[0].headers["ratelimit-policy"] == '"tenant";q=3;w=3000'

    refused = await client.get("/v1/me", headers=admin.headers)
    assert refused.status_code == 429
    assert refused.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert refused.headers["retry-after"] == "1000"
    assert refused.headers["ratelimit"] == '"tenant";r=0;t=1000'
    body = refused.json()
    assert body["type"] == "/problems/rate-limited"
    assert body["retry_after_seconds"] == 1000
    assert body["limit"] == {"per_second": NO_REFILL, "burst": 3}

    assert (await client.get("/v1/me", headers=other.headers)).status_code == 200
    assert (await client.get("/healthz")).status_code == 200  # probes are never limited


async def test_a_batch_costs_a_token_per_item(client: AsyncClient, make_key: MakeKey) -> None:
    key = await make_key(Role.READER)
    items = [{"venue": "sim", "symbol": "BTCUSDT", "timeframe": "1m"}] * 3
    assert (await client.get("/v1/me", headers=key.headers)).status_code == 200  # 2 of 3 left
    refused = await client.post("/v1/signals/batch", json={"items": items}, headers=key.headers)
    assert refused.status_code == 429, refused.text
    assert refused.headers["ratelimit"] == '"tenant";r=0;t=1000'  # one line, the refusal's
    # Refused before spending its items: only the request's own token went (1 of 3 left).
    assert (await client.get("/v1/me", headers=key.headers)).status_code == 200
    assert (await client.get("/v1/me", headers=key.headers)).status_code == 429


async def test_a_batch_larger_than_the_burst_costs_the_whole_bucket(client: AsyncClient, make_key: MakeKey) -> None:
    key = await make_key(Role.READER)
    items = [{"venue": "sim", "symbol": "BTCUSDT", "timeframe": "1m"}] * 5  # burst is 3: it could never be paid
    served = await client.post("/v1/signals/batch", json={"items": items}, headers=key.headers)
    assert served.status_code == 200, served.text
    assert (await client.get("/v1/me", headers=key.headers)).status_code == 429


async def test_limiting_off_sends_no_budget_headers(client: AsyncClient, settings: Settings, make_key: MakeKey) -> None:
    key = await make_key(Role.READER)  # through the tight app (its lifespan runs for `client`): same database
    async with running(create_app(settings.model_copy(update={"rate_limit_per_second": 0.0}))) as unlimited:
        for _ in range(5):
            response = await unlimited.get("/v1/me", headers=key.headers)
            assert response.status_code == 200
            assert "ratelimit" not in response.headers


async def test_every_authenticated_request_is_counted_by_route_template_and_status(
    app: FastAPI, client: AsyncClient, make_key: MakeKey
) -> None:
    key = await make_key(Role.ADMIN)
    await client.get("/v1/keys", headers=key.headers)
    await client.get("/v1/keys/not-a-uuid", headers=key.headers)
    await client.get("/v1/nowhere", headers=key.headers)
    await client.get("/v1/me", headers=key.headers)  # the fourth request of a 3-token budget
    await client.get("/v1/me")  # no key: no tenant to count it for
    counted = {(route, status): n for (_, _, key_id, route, status), n in app.state.usage_meter.pending.items()}
    assert counted == {
        ("GET /v1/keys", 2): 1,
        ("GET /v1/keys/{key_id}", 4): 1,
        ("unmatched", 4): 1,
        ("GET /v1/me", 4): 1,  # throttled requests are counted: tenants see how often they hit the limit
    }


async def roomy_operator(client: AsyncClient, make_key: MakeKey) -> IssuedKey:
    """An operator whose own tenant has a budget no test spends (its first request is the one raising it)."""
    operator = await make_key(Role.OPERATOR, tenant="ops")
    raised = await client.put(
        f"/v1/tenants/{operator.tenant_id}/rate-limit",
        json={"per_second": 1000, "burst": 1000},
        headers=operator.headers,
    )
    assert raised.status_code == 200, raised.text
    return operator


async def test_an_operator_gives_a_tenant_its_own_budget_and_its_keys_apply_it_at_once(
    client: AsyncClient, make_key: MakeKey
) -> None:
    operator = await roomy_operator(client, make_key)
    reader = await make_key(Role.READER)
    admin = await make_key(Role.ADMIN)
    url = f"/v1/tenants/{reader.tenant_id}/rate-limit"

    own = await client.put(url, json={"per_second": NO_REFILL, "burst": 6}, headers=operator.headers)
    assert own.status_code == 200, own.text
    assert own.json()["rate_limit"] == {"per_second": NO_REFILL, "burst": 6, "source": "tenant"}
    me = await client.get("/v1/me", headers=reader.headers)
    assert me.json()["rate_limit"] == {"per_second": NO_REFILL, "burst": 6, "source": "tenant"}
    assert me.headers["ratelimit-policy"] == '"tenant";q=6;w=6000'
    statuses = [(await client.get("/v1/me", headers=reader.headers)).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]

    back = await client.delete(url, headers=operator.headers)
    assert back.json()["rate_limit"] == {"per_second": NO_REFILL, "burst": 3, "source": "default"}
    refused = await client.get("/v1/me", headers=admin.headers)  # the same bucket (spent), the default policy now
    assert refused.status_code == 429
    assert refused.json()["limit"] == {"per_second": NO_REFILL, "burst": 3}
    assert refused.headers["ratelimit-policy"] == '"tenant";q=3;w=3000'
    listed = (await client.get("/v1/tenants", headers=operator.headers)).json()
    assert {t["name"]: t["rate_limit"]["source"] for t in listed} == {"ops": "tenant", "acme": "default"}


async def test_tenant_budgets_are_validated_and_operators_only(client: AsyncClient, make_key: MakeKey) -> None:
    operator = await roomy_operator(client, make_key)
    admin = await make_key(Role.ADMIN)
    url = f"/v1/tenants/{admin.tenant_id}/rate-limit"
    for bad in ({"per_second": 0, "burst": 5}, {"per_second": 5, "burst": 0}, {"per_second": 5}, {"burst": 5}):
        response = await client.put(url, json=bad, headers=operator.headers)
        assert response.status_code == 422, bad
        assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    missing = await client.put(
        f"/v1/tenants/{uuid.uuid4()}/rate-limit", json={"per_second": 5, "burst": 5}, headers=operator.headers
    )
    assert (missing.status_code, missing.json()["type"]) == (404, "/problems/tenant-not-found")
    own = await client.put(url, json={"per_second": 5, "burst": 5}, headers=admin.headers)
    assert (own.status_code, own.json()["type"]) == (403, "/problems/insufficient-scope")
    created = await client.post(
        "/v1/tenants", json={"name": "globex", "rate_limit": {"per_second": 2, "burst": 10}}, headers=operator.headers
    )
    assert created.status_code == 201, created.text
    assert created.json()["rate_limit"] == {"per_second": 2.0, "burst": 10, "source": "tenant"}


async def test_with_no_default_budget_only_tenants_with_their_own_are_limited(
    client: AsyncClient, settings: Settings, make_key: MakeKey
) -> None:
    operator = await roomy_operator(client, make_key)
    limited = await make_key(Role.READER)
    unbudgeted = await make_key(Role.READER, tenant="globex")
    await client.put(
        f"/v1/tenants/{limited.tenant_id}/rate-limit",
        json={"per_second": NO_REFILL, "burst": 2},
        headers=operator.headers,
    )
    async with running(create_app(settings.model_copy(update={"rate_limit_per_second": 0.0}))) as unlimited:
        free = [await unlimited.get("/v1/me", headers=unbudgeted.headers) for _ in range(4)]
        assert [r.status_code for r in free] == [200] * 4
        assert free[0].json()["rate_limit"] is None
        capped = [(await unlimited.get("/v1/me", headers=limited.headers)).status_code for _ in range(3)]
        assert capped == [200, 200, 429]


async def test_both_429_problems_are_documented(client: AsyncClient) -> None:
    for slug in ("rate-limited", "client-rate-limited"):  # the second is nginx's (nginx/nginx.conf)
        documented = await client.get(f"/problems/{slug}")
        assert documented.status_code == 200
        assert documented.json()["status"] == 429
