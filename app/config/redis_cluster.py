"""Redis Cluster mode: one setting switches the client from one server to a cluster.

A base class of `Settings` (read from the same `DELTAFLOW_*` environment). `DELTAFLOW_REDIS_CLUSTER=true` makes
`DELTAFLOW_REDIS_URL` the address of any one node (`redis://host:port/0` or `rediss://…`): the client discovers the
others with CLUSTER SLOTS. A flag rather than a URL scheme of our own (`redis+cluster://`): the URL stays one that
redis-cli, redis-py and every managed service's console understand, and secrets redaction needs no new scheme.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import model_validator
from pydantic_settings import BaseSettings


class RedisClusterSettings(BaseSettings):
    # The keys the service uses together carry hash tags (see app/core/redis.py), so the same code runs on both.
    redis_cluster: bool = False

    @model_validator(mode="after")
    def _cluster_needs_a_node_url(self) -> RedisClusterSettings:
        if not self.redis_cluster:
            return self
        url = str(getattr(self, "redis_url", ""))
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(
                "DELTAFLOW_REDIS_CLUSTER needs DELTAFLOW_REDIS_URL to be a cluster node's redis:// or rediss:// URL"
                " (a cluster has no unix sockets and no embedded memory:// mode)"
            )
        if parts.path.strip("/") not in ("", "0"):
            raise ValueError("DELTAFLOW_REDIS_CLUSTER: a cluster has only database 0 (use redis://host:port/0)")
        return self
