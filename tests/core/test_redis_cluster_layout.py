"""Redis Cluster mode without a cluster: the keys every multi-key command, transaction and script takes share one
hash slot (CRC16, as the cluster computes it), the setting that selects cluster mode, and the client it builds.
tests/e2e/test_redis_cluster.py runs the whole service on a real 3-master cluster."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from app.alerts.claims import claim_key, done_key
from app.auth.verifier import cache_key, generation_key
from app.core.redis import create_redis, publish_all
from app.market.aggregation import TIMEFRAMES
from app.market.keys import FeedKeys
from app.signals.service import cache_key as signal_cache_key
from app.signals.track_record import _summary_key
from app.usage.cache import _keys as usage_keys
from tests.conftest import make_settings

FEEDS = [("binance", "BTCUSDT"), ("bybit", "ETHUSDT"), ("sim", "SOLUSDT"), ("binance-futures", "XRPUSDT")]
KEY_HASHES = [f"{n:064x}" for n in (1, 2, 3, 0xDEADBEEF)]


def _slots(*keys: str) -> set[int]:
    return {key_slot(key.encode()) for key in keys}


@pytest.mark.parametrize(("venue", "symbol"), FEEDS)
def test_every_key_of_a_feed_is_in_one_slot(venue: str, symbol: str) -> None:
    keys = FeedKeys(venue, symbol)
    every = [keys.book, keys.bar_closed, keys.liquidations, keys.status, keys.lease]
    for timeframe in TIMEFRAMES:
        # The bar-closing script takes bars, footprints and per-bar liquidations; a forming bar's DEL takes two.
        every += [keys.bars[timeframe], keys.footprints[timeframe], keys.liquidations_per_bar[timeframe]]
        every += [keys.forming[timeframe], keys.forming_detail[timeframe]]
        # Signal and track-record documents live with their feed (and single-flight locks with their documents).
        document = signal_cache_key(venue, symbol, timeframe, 1_700_000_000_000)
        every += [document, f"{document}:lock", _summary_key(venue, symbol, timeframe)]
        every += [claim_key(venue, symbol, timeframe, 60_000), done_key(venue, symbol, timeframe, 60_000)]
    assert len(_slots(*every)) == 1


def test_feeds_spread_over_slots() -> None:
    assert len({key_slot(FeedKeys(venue, symbol).bars["1m"].encode()) for venue, symbol in FEEDS}) == len(FEEDS)


@pytest.mark.parametrize("key_hash", KEY_HASHES)
def test_a_key_cache_entry_and_its_generation_are_in_one_slot(key_hash: str) -> None:
    assert len(_slots(cache_key(key_hash), generation_key(key_hash))) == 1


def test_key_cache_entries_spread_over_slots() -> None:
    assert len({key_slot(cache_key(key_hash).encode()) for key_hash in KEY_HASHES}) == len(KEY_HASHES)


def test_a_tenants_usage_reports_and_generation_are_in_one_slot() -> None:
    tenants = [uuid.uuid4() for _ in range(4)]
    for tenant in tenants:
        assert len(_slots(*usage_keys(tenant))) == 1
    assert len({key_slot(usage_keys(tenant)[0].encode()) for tenant in tenants}) > 1


def test_one_setting_selects_cluster_mode_and_the_cluster_client() -> None:
    settings = make_settings(redis_url="redis://127.0.0.1:7000/0", redis_cluster=True)
    client = create_redis(settings)  # connects lazily: no server needed to build it
    assert isinstance(client, RedisCluster)
    node_class = client.connection_kwargs["connection_class"]
    assert node_class.__name__ == "CountedConnection", "cluster connections must count their errors too"
    assert all(node.connection_class is node_class for node in client.startup_nodes)
    assert client.connection_kwargs["max_connections"] == settings.redis_max_connections
    assert isinstance(create_redis(make_settings(redis_url="redis://127.0.0.1:7000/0")), Redis)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memory://", "redis:// or rediss://"),
        ("unix:///run/redis.sock", "redis:// or rediss://"),
        ("redis://127.0.0.1:7000/9", "only database 0"),
    ],
)
def test_cluster_mode_refuses_urls_a_cluster_cannot_serve(url: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make_settings(redis_url=url, redis_cluster=True)


async def test_publish_all_keeps_the_order_in_one_round_trip(memory_redis_url: str) -> None:
    client = create_redis(make_settings(redis_url=memory_redis_url))
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe("a", "b")
        await publish_all(client, [("a", b"1"), ("b", b"2"), ("a", b"3")])
        await publish_all(client, [])
        received: list[tuple[bytes, bytes]] = []
        while len(received) < 3:
            message = await pubsub.get_message(timeout=1)
            if message is not None:
                received.append((message["channel"], message["data"]))
        assert received == [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")]
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves this unannotated
        await client.aclose()
