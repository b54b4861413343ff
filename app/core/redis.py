"""Redis client for three deployments: one server (`redis://…`), a Redis Cluster (`DELTAFLOW_REDIS_CLUSTER=true`,
the URL naming any one node), or the embedded in-process server (`memory://`).

`memory://` is fakeredis behind the very same `redis.asyncio.Redis` class (Lua scripting through lupa, pub/sub
included), so callers never branch on the backend. All clients created for the same `memory://` URL in a process
share one in-process server, as instances of the API share one real Redis.

A cluster is `redis.asyncio.cluster.RedisCluster`: the same command API, not a subclass of `Redis`. Callers are typed
against `RedisClient` (the union), so mypy checks every call exists on both. What the type checker cannot see is
the cluster's one rule: a multi-key command, a MULTI/EXEC transaction or a Lua script touches keys of one hash slot
only. Every key the service uses together therefore shares a hash tag (`{…}`); where data does not belong together
the code runs one operation per key instead:

- market data: every key of a feed has the tag `{venue:symbol}` (app/market/keys.py), so the bar-closing script and
  the reads of one feed hit one node; `md:feeds` (all feeds) is written in non-transactional pipelines only;
- API-key cache: `auth:key:{<hash>}` and `auth:gen:{<hash>}` (the generation compare-and-set script takes both);
- usage reports: `usage:{<tenant>}:reports` and `usage:{<tenant>}:gen`;
- signals and track records: the feed's tag, so a document and its single-flight lock share a slot;
- alert evaluation claims: the feed's tag (app/alerts/claims.py);
- rate limits, quotas, ingest leases, login throttling: one key per script or transaction;
- console sessions: a session (found by its cookie alone) and its user's index cannot share a tag, so they are
  written in two steps in a safe order (app/console/sessions.py), and listed with one GET per session.

Non-transactional pipelines may span slots (the cluster client sends each node its share, so order across nodes
is not kept), but redis-py's ClusterPipeline refuses PUBLISH, MGET and EVALSHA in one: messages go out through
`publish_all` or inside a script, and scripts in pipelines are sent with EVAL.

Pub/sub stays classic, not sharded: the bar-close listener needs a pattern subscription, which sharded pub/sub
lacks, and at our rates (bar closes, key invalidations, alert events) the cluster bus carrying each message to
every node costs less than a second subscription model would.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, TypeAlias

import fakeredis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, ClusterPubSub, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

from app.config import Settings
from app.core.metrics import REDIS_ERRORS

# What `create_redis` returns and callers annotate: both clients share redis-py's command mixins.
RedisClient: TypeAlias = Redis | RedisCluster
RedisPipeline: TypeAlias = Pipeline | ClusterPipeline

_memory_servers: dict[str, fakeredis.FakeServer] = {}
_memory_servers_lock = threading.Lock()


def memory_server(url: str) -> fakeredis.FakeServer:
    """The process-wide in-memory server behind a `memory://name` URL (created on first use)."""
    with _memory_servers_lock:
        server = _memory_servers.get(url)
        if server is None:
            server = fakeredis.FakeServer()
            _memory_servers[url] = server
        return server


def create_redis(settings: Settings) -> RedisClient:
    """A pooled client; connections are opened lazily, so creating it never blocks or fails on a down server."""
    if settings.is_memory_redis:
        client: Redis = fakeredis.FakeAsyncRedis(server=memory_server(settings.redis_url))
        return client
    if settings.redis_cluster:
        return _create_cluster(settings)
    # A blocking pool: when all `redis_max_connections` are busy, a command waits up to `redis_pool_timeout_seconds`
    # for one instead of failing at once ("Too many connections"), so a burst of requests queues rather than 503s.
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_seconds,
        socket_timeout=settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_socket_timeout_seconds,
        health_check_interval=30,
        retry=Retry(NoBackoff(), settings.redis_reconnect_retries, supported_errors=(RedisConnectionError,)),
    )
    # Subclassed after from_url chose the class for the scheme (TCP, TLS, unix socket): every one is counted.
    pool.connection_class = type(f"Counted{pool.connection_class.__name__}", (_CountErrors, pool.connection_class), {})
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


def _create_cluster(settings: Settings) -> RedisCluster:
    """The cluster client: the same timeouts and health checks; the topology is read on the first command.

    The pool bound applies per node. The cluster client has no blocking pool: with all of a node's connections busy
    a command fails at once (MaxConnectionsError) instead of queueing, so size `redis_max_connections` for the
    peak concurrency of one process against one node."""
    cluster = _Cluster.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        socket_timeout=settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_socket_timeout_seconds,
        health_check_interval=30,
    )
    # RedisCluster takes no connection class; every node (the startup one and those discovered later) is built
    # from this shared kwargs dict, so counting is installed the same way as for one server.
    base = cluster.connection_kwargs["connection_class"]
    counted = type(f"Counted{base.__name__}", (_CountErrors, base), {})
    cluster.connection_kwargs["connection_class"] = counted
    for node in cluster.startup_nodes:
        node.connection_class = counted
    return cluster


class _Cluster(RedisCluster):
    """RedisCluster whose pub/sub may be the first thing used (the key-invalidation listener starts with the app)."""

    def pubsub(
        self, node: ClusterNode | None = None, host: str | None = None, port: int | None = None, **kwargs: Any
    ) -> ClusterPubSub:
        return _ClusterPubSub(self, node=node, host=host, port=port, **kwargs)


class _ClusterPubSub(ClusterPubSub):
    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        # redis-py's cluster pub/sub picks its node from the slot map, which only a command through the client
        # loads (an empty map is a KeyError); initialize() loads it once and is a flag check afterwards.
        await self.cluster.initialize()
        return await super().execute_command(*args, **kwargs)


# ARGV: channel, message, channel, message … Keyless, so a cluster runs it on any node (PUBLISH reaches all).
_PUBLISH_ALL = """
for i = 1, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end
return #ARGV / 2
"""


async def publish_all(redis: RedisClient, messages: Iterable[tuple[str, bytes | str]]) -> None:
    """PUBLISH each (channel, message) in order, in one round trip on a server and on a cluster alike (a cluster
    pipeline refuses PUBLISH; concurrent PUBLISHes would lose the order)."""
    flat = [part for message in messages for part in message]
    if flat:
        await redis.eval(_PUBLISH_ALL, 0, *flat)


class _CountErrors:
    """Counts failed Redis I/O in `deltaflow_redis_errors_total`, once per error, where every command passes.
    A script missing from the server's cache (NOSCRIPT) is redis-py's normal path to load it, not an error; so
    are the refusals of optional handshake commands (`CLIENT SETINFO` on an older server) that `connect` swallows:
    only what escapes `connect` counts."""

    _connecting = False

    async def connect(self, *args: Any, **kwargs: Any) -> Any:
        self._connecting = True
        try:
            return await super().connect(*args, **kwargs)  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            _count(exc)
            raise
        finally:
            self._connecting = False

    async def send_packed_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().send_packed_command(*args, **kwargs)  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            _count(exc)
            raise

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            if not self._connecting:
                _count(exc)
            raise


for _kind in ("connection", "timeout", "response"):  # exported at 0, so rate() and alerts see them from the start
    REDIS_ERRORS.labels(_kind)


def _count(exc: BaseException) -> None:
    if isinstance(exc, NoScriptError) or getattr(exc, "_deltaflow_counted", False):
        return
    exc._deltaflow_counted = True  # type: ignore[attr-defined]  # one error may pass through several layers
    kind = (
        "response"
        if isinstance(exc, ResponseError)
        else "timeout"
        if isinstance(exc, (RedisTimeout, TimeoutError))
        else "connection"
    )
    REDIS_ERRORS.labels(kind).inc()
