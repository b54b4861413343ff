"""FastAPI dependencies for the resources the lifespan opens (engine, sessions, Redis, settings, lifecycle).

All `async def`: FastAPI would run plain `def` dependencies in a thread pool, a costly hop for a dict lookup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.core.db import session_scope
from app.core.lifecycle import Lifecycle
from app.core.redis import RedisClient


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


async def get_redis(request: Request) -> RedisClient:
    # In cluster mode this is a RedisCluster (app.core.redis.RedisClient: the same command API).
    redis: RedisClient = request.app.state.redis
    return redis


async def get_lifecycle(request: Request) -> Lifecycle:
    lifecycle: Lifecycle = request.app.state.lifecycle
    return lifecycle


async def get_db_session(request: Request) -> AsyncIterator[AsyncSession]:
    async for session in session_scope(request.app.state.session_factory):
        yield session


# scope="function": the code after `yield` (commit, then the post-commit hooks such as cache invalidation) runs
# when the handler returns, *before* the response is sent. With FastAPI's default request scope it ran after the
# response had gone out: a client could get 201 for a row that a failing COMMIT never stored, and its next request
# could miss its own write (a new key 401, a revoked key still 200). A failing commit now raises into the
# exception handlers and reaches the client as a problem response.
_DB_SESSION = Depends(get_db_session, scope="function")


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
RedisDep = Annotated[RedisClient, Depends(get_redis)]
LifecycleDep = Annotated[Lifecycle, Depends(get_lifecycle)]
DbSession = Annotated[AsyncSession, _DB_SESSION]
