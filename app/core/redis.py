"""Redis client for both backends: a real server (`redis://…`) or the embedded in-process one (`memory://`).

`memory://` is fakeredis behind the very same `redis.asyncio.Redis` class (Lua scripting through lupa, pub/sub
included), so callers never branch on the backend. All clients created for the same `memory://` URL in a process
share one in-process server, as instances of the API share one real Redis.
"""

from __future__ import annotations

import threading

import fakeredis
from redis.asyncio import BlockingConnectionPool, Redis

from app.config import Settings

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


def create_redis(settings: Settings) -> Redis:
    """A pooled client; connections are opened lazily, so creating it never blocks or fails on a down server."""
    if settings.is_memory_redis:
        client: Redis = fakeredis.FakeAsyncRedis(server=memory_server(settings.redis_url))
        return client
    # A blocking pool: when all `redis_max_connections` are busy, a command waits up to the socket timeout for
    # one instead of failing at once ("Too many connections"), so a burst of requests queues rather than 503s.
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_socket_timeout_seconds,
        socket_timeout=settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_socket_timeout_seconds,
        health_check_interval=30,
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes it
