"""Fixtures for the trading routes.

`signals_client` is the one client these tests use: it holds a real API key with only `signals:read`, verified
by the real auth middleware against Postgres and Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from app.auth.scopes import Role, Scope
from app.config import Settings
from app.keys.admin import ensure_tenant, issue_key
from app.main import create_app
from tests.helpers import running

MINUTE_MS = 60_000
START_MS = 1_700_000_000_000


async def authenticate(app: FastAPI, client: AsyncClient, tenant_name: str = "trading-tests") -> AsyncClient:
    """Make `client` a caller holding a real key with only `signals:read` (issued straight into the database)."""
    settings: Settings = app.state.settings
    async with app.state.session_factory() as session:
        tenant = await ensure_tenant(session, tenant_name)
        _key, secret = await issue_key(
            session,
            settings,
            tenant_id=tenant.id,
            name="trading-tests",
            role=Role.READER,
            scopes=frozenset({Scope.SIGNALS_READ}),
        )
        await session.commit()
    client.headers["authorization"] = f"Bearer {secret}"
    return client


@pytest.fixture
async def signals_client(client: AsyncClient, app: FastAPI) -> AsyncClient:
    return await authenticate(app, client)


@asynccontextmanager
async def signals_client_with(settings: Settings, **overrides: object) -> AsyncIterator[AsyncClient]:
    """A `signals_client` for an app built with some settings changed (limits, workers)."""
    app = create_app(settings.model_copy(update=overrides))
    async with running(app) as client:
        yield await authenticate(app, client)


def candle_rows(count: int, seed: int = 3, *, taker: bool = True, drift: float = 0.0) -> list[dict[str, Any]]:
    """A random walk of one-minute candles in the wire format; ``drift`` (in steps of 20) per bar makes a trend
    the calibrated signal learns to follow (1.0: +480 over its 24-bar horizon, far above the fees)."""
    rng = np.random.default_rng(seed)
    close = 30_000 + np.cumsum(rng.standard_normal(count) + drift) * 20
    open_ = np.concatenate((close[:1], close[:-1]))
    high = np.maximum(open_, close) + rng.random(count) * 10
    low = np.minimum(open_, close) - rng.random(count) * 10
    volume = rng.random(count) * 50
    rows: list[dict[str, Any]] = [
        {"t": START_MS + i * MINUTE_MS, "o": o, "h": h, "l": lo, "c": c, "v": v}
        for i, (o, h, lo, c, v) in enumerate(
            zip(open_.tolist(), high.tolist(), low.tolist(), close.tolist(), volume.tolist(), strict=True)
        )
    ]
    if taker:
        for row, share in zip(rows, rng.random(count).tolist(), strict=True):
            row["taker_buy_v"] = row["v"] * share
    return rows


def trade_rows(count: int, bars: int, seed: int = 5) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    times = np.sort(rng.integers(START_MS, START_MS + bars * MINUTE_MS, count))
    price = np.round((30_000 + np.cumsum(rng.standard_normal(count)) * 0.5) * 2) / 2
    qty = rng.exponential(0.05, count)
    side = rng.random(count) > 0.5
    return [
        {"t": t, "p": p, "q": q, "side": "buy" if s else "sell"}
        for t, p, q, s in zip(times.tolist(), price.tolist(), qty.tolist(), side.tolist(), strict=True)
    ]
