"""Alert fixtures: the key fixtures, and an app on either backend (real Postgres, or a fresh embedded SQLite file)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI

from app.models import AlertRule
from tests.keys.conftest import (  # noqa: F401 - re-exported fixtures
    backend,
    backend_settings,
    backend_url,
    make_backend_key,
    make_key,
)


def rule_body(**overrides: Any) -> dict[str, Any]:
    """A valid rule on a configured feed (binance:BTCUSDT is in the default `DELTAFLOW_FEEDS`)."""
    body: dict[str, Any] = {
        "name": "btc turns long",
        "venue": "binance",
        "symbol": "BTCUSDT",
        "timeframe": "5m",
        "condition": {
            "all": [
                {"field": "bias", "op": "changes_to", "value": "long"},
                {"event": "choch", "direction": "bullish"},
            ]
        },
    }
    body.update(overrides)
    return body


async def insert_rule(app: FastAPI, tenant_id: uuid.UUID, **overrides: Any) -> uuid.UUID:
    """A rule inserted straight into the database (for tests that need one in a tenant they hold no key of)."""
    values: dict[str, Any] = {
        "tenant_id": tenant_id,
        "name": "inserted",
        "venue": "binance",
        "symbol": "BTCUSDT",
        "timeframe": "1m",
        "condition": {"event": "bos"},
        "frequency": "on_change",
        **overrides,
    }
    async with app.state.session_factory() as session, session.begin():
        rule = AlertRule(**values)
        session.add(rule)
        await session.flush()
        return rule.id
