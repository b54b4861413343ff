"""The console's usage, audit, feeds, webhook and tenants pages, in-process over real Postgres and Redis."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import orjson
from fastapi import FastAPI
from sqlalchemy import update

from app.auth.scopes import Role
from app.config import Settings
from app.console.service import ConsoleRole
from app.keys.admin import issue_key
from app.main import create_app
from app.market.keys import FeedKeys
from app.models import Tenant, UsageCount, WebhookEndpoint
from tests.console.conftest import MakeUser, browser, console_settings, signed_in
from tests.helpers import running


async def _seed_usage(app: FastAPI, tenant_name: str) -> tuple[str, str]:
    """A key of the tenant and three days of counts for it; returns (key id, key secret)."""
    async with app.state.session_factory() as session:
        tenant = (await session.execute(Tenant.__table__.select().where(Tenant.name == tenant_name))).one()
        key, secret = await issue_key(session, app.state.settings, tenant_id=tenant.id, name="metered", role=Role.ADMIN)
        today = datetime.now(UTC).date()
        for offset, (ok, refused, failed) in enumerate([(120, 7, 1), (80, 3, 0), (15, 0, 2)]):
            day = today - timedelta(days=offset)
            for status_class, requests in ((2, ok), (4, refused), (5, failed)):
                if requests:
                    session.add(UsageCount(day=day, tenant_id=tenant.id, api_key_id=key.id,
                                           route="GET /v1/signals/{venue}/{symbol}", status_class=status_class,
                                           requests=requests))  # fmt: skip
        await session.commit()
    return str(key.id), secret


async def test_the_usage_page_shows_the_totals_the_api_reports(console_app: FastAPI, make_user: MakeUser) -> None:
    await make_user()
    key_id, secret = await _seed_usage(console_app, "acme")
    async with browser(console_app) as client:
        await signed_in(client, "ada@example.com")
        page = await client.get("/console/usage")
        assert page.status_code == 200
        api = await client.get("/v1/usage", headers={"X-API-Key": secret})
        totals = api.json()["totals"]
        assert totals["requests"] == 228
        shown = re.search(r'data-testid="total-requests">(\d+)<', page.text)
        assert shown is not None
        assert int(shown.group(1)) == totals["requests"]
        chart = orjson.loads(page.text.split('id="usage-data">', 1)[1].split("</script>", 1)[0])
        assert sum(chart["2xx"]) + sum(chart["4xx"]) + sum(chart["5xx"]) == totals["requests"]
        assert len(chart["days"]) == 30
        assert "metered" in page.text
        assert "GET /v1/signals/{venue}/{symbol}" in page.text
        one_key = await client.get("/console/usage", params={"key_id": key_id, "from": str(datetime.now(UTC).date())})
        assert 'data-testid="total-requests">128<' in one_key.text
        bad = await client.get("/console/usage", params={"from": "2026-01-10", "to": "2026-01-01"})
        assert bad.status_code == 422


async def test_the_audit_page_filters_by_action_actor_and_date(console_app: FastAPI, make_user: MakeUser) -> None:
    account = await make_user()
    async with browser(console_app) as client:
        token = await signed_in(client, "ada@example.com")
        for name in ("one", "two"):
            assert (await client.post("/console/keys", data={"name": name, "csrf": token})).status_code == 200
        created = await client.get("/console/audit", params={"action": "key.created"})
        assert created.text.count('data-testid="audit-row"') == 2
        assert str(account.user.id) in created.text  # the user is the actor
        mine = await client.get("/console/audit", params={"actor": str(account.user.id)})
        assert mine.text.count('data-testid="audit-row"') == 4  # created, signed in, two keys
        tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
        assert 'data-testid="audit-row"' not in (await client.get("/console/audit", params={"from": tomorrow})).text


async def test_the_feeds_page_shows_each_feed_and_refreshes_itself(console_app: FastAPI, make_user: MakeUser) -> None:
    await make_user()
    status = {"venue": "binance", "symbol": "BTCUSDT", "state": "streaming", "connected": True, "reconnects": 2}
    await console_app.state.redis.set(FeedKeys("binance", "BTCUSDT").status, orjson.dumps(status))
    async with browser(console_app) as client:
        await signed_in(client, "ada@example.com")
        page = await client.get("/console/feeds")
        assert page.status_code == 200
        assert 'hx-trigger="every 5s"' in page.text
        fragment = await client.get("/console/feeds", headers={"hx-request": "true"})
        assert fragment.text.lstrip().startswith('<div id="feeds-table"')
        assert "binance:BTCUSDT" in fragment.text


async def test_the_webhook_page_applies_the_egress_guard_and_rotates_the_secret(
    console_app: FastAPI, make_user: MakeUser
) -> None:
    await make_user()
    async with browser(console_app) as client:
        token = await signed_in(client, "ada@example.com")
        # tests run with private destinations allowed (receivers on loopback); the schema's bounds still hold
        too_long = await client.post("/console/webhook", data={"url": "https://x.example/" + "a" * 2100, "csrf": token})
        assert too_long.status_code == 422
        saved = await client.post("/console/webhook", data={"url": "https://hooks.example.com/d", "csrf": token})
        assert saved.status_code == 200, saved.text
        assert "version 1" in saved.text
        rotated = await client.post(
            "/console/webhook", data={"url": "https://hooks.example.com/d", "rotate_secret": "on", "csrf": token}
        )
        assert "version 2" in rotated.text
        assert "https://hooks.example.com/d" in (await client.get("/console/webhook")).text


async def test_the_webhook_page_says_when_deliveries_fail_or_stopped(console_app: FastAPI, make_user: MakeUser) -> None:
    await make_user()
    async with browser(console_app) as client:
        token = await signed_in(client, "ada@example.com")
        saved = await client.post("/console/webhook", data={"url": "https://hooks.example.com/d", "csrf": token})
        assert saved.status_code == 200, saved.text
        page = await client.get("/console/webhook")
        assert 'data-testid="webhook-failing"' not in page.text
        assert 'data-testid="webhook-disabled"' not in page.text

        since = datetime.now(UTC) - timedelta(days=2)
        await _set_webhook_health(console_app, failing_since=since, disabled_at=None)
        page = await client.get("/console/webhook")
        assert 'data-testid="webhook-failing"' in page.text
        assert since.isoformat(timespec="seconds")[:16] in page.text

        await _set_webhook_health(console_app, failing_since=since, disabled_at=datetime.now(UTC))
        page = await client.get("/console/webhook")
        assert 'data-testid="webhook-disabled"' in page.text
        assert 'data-testid="webhook-failing"' not in page.text

        # Saving the URL again enables the endpoint (the PUT clears both marks).
        await client.post("/console/webhook", data={"url": "https://hooks.example.com/d", "csrf": token})
        page = await client.get("/console/webhook")
        assert 'data-testid="webhook-disabled"' not in page.text
        assert 'data-testid="webhook-failing"' not in page.text


async def _set_webhook_health(app: FastAPI, *, failing_since: datetime | None, disabled_at: datetime | None) -> None:
    async with app.state.session_factory() as session:
        await session.execute(update(WebhookEndpoint).values(failing_since=failing_since, disabled_at=disabled_at))
        await session.commit()


async def test_operators_manage_tenants_and_budgets_and_admins_cannot(
    console_app: FastAPI, make_user: MakeUser
) -> None:
    await make_user(ConsoleRole.OPERATOR, email="op@example.com")
    await make_user(email="ada@example.com", tenant="other")
    async with browser(console_app) as client:
        token = await signed_in(client, "op@example.com")
        made = await client.post(
            "/console/tenants", data={"name": "fresh", "per_second": "5", "burst": "50", "csrf": token}
        )
        assert made.status_code == 200, made.text
        page = await client.get("/console/tenants")
        assert "5.0/s, burst 50 (tenant)" in page.text
        tenant_id = re.search(r'/console/tenants/([0-9a-f-]{36})/rate-limit"', page.text.split("fresh", 1)[1])
        assert tenant_id is not None
        cleared = await client.post(
            f"/console/tenants/{tenant_id.group(1)}/rate-limit", data={"clear": "1", "csrf": token}
        )
        assert cleared.status_code == 200
        quota = await client.post(
            f"/console/tenants/{tenant_id.group(1)}/quota", data={"monthly_requests": "250000", "csrf": token}
        )
        assert quota.status_code == 200, quota.text
        assert "250,000" in (await client.get("/console/tenants")).text
        nonsense = await client.post(
            f"/console/tenants/{tenant_id.group(1)}/quota", data={"monthly_requests": "0", "csrf": token}
        )
        assert nonsense.status_code == 422
        duplicate = await client.post("/console/tenants", data={"name": "fresh", "csrf": token})
        assert duplicate.status_code == 422
        assert "already exists" in duplicate.text
    async with browser(console_app) as admin:
        await signed_in(admin, "ada@example.com")
        assert (await admin.get("/console/tenants")).status_code == 403


async def test_every_console_page_renders_for_an_operator(console_app: FastAPI, make_user: MakeUser) -> None:
    await make_user(ConsoleRole.OPERATOR, email="op@example.com")
    async with browser(console_app) as client:
        await signed_in(client, "op@example.com")
        for path in ("/console/keys", "/console/usage", "/console/audit", "/console/feeds", "/console/webhook",
                     "/console/tenants", "/console/account"):  # fmt: skip
            page = await client.get(path)
            assert page.status_code == 200, (path, page.text[:300])
            assert 'aria-current="page"' in page.text


async def test_the_console_can_be_switched_off(settings: Settings) -> None:
    app = create_app(console_settings(settings, console_enabled=False))
    async with running(app), browser(app) as client:
        assert (await client.get("/console/login")).status_code == 404
        assert (await client.get("/healthz")).status_code == 200
