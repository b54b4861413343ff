"""The console in a real browser: Debian's Chromium driven by Playwright (`executable_path`, no browser download)
against a real `deltaflow serve` on Postgres and Redis.

Screenshots of every page visited are kept under `var/test-artifacts/console/` (override with
`DELTAFLOW_TEST_ARTIFACTS`); each page is checked with axe-core (vendored under tests/console/vendor) for serious
or critical accessibility violations.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page

from tests.conftest import TEST_REDIS_URL, truncate_all
from tests.console.conftest import CHROMIUM
from tests.e2e.test_revocation import DELTAFLOW
from tests.e2e.test_serve import serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("DELTAFLOW_TEST_ARTIFACTS", ROOT / "var" / "test-artifacts")) / "console"
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
EMAIL = "admin@example.com"
PASSWORD = "a browser-typed passphrase"

needs_chromium = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists(),
    reason=f"no Chromium at {CHROMIUM} (`apt-get install chromium`; .ci/run installs it)",
)


def _cli(env: dict[str, str], *args: str, stdin: str = "") -> str:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DELTAFLOW_")} | env
    result = subprocess.run(
        [DELTAFLOW, *args], env=environment, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
async def console_server(postgres_url: str, redis_client: object) -> AsyncIterator[tuple[str, str]]:
    env = {
        "DELTAFLOW_DATABASE_URL": postgres_url,
        "DELTAFLOW_REDIS_URL": TEST_REDIS_URL,
        "DELTAFLOW_RATE_LIMIT_PER_SECOND": "0",
        "DELTAFLOW_FEEDS": "",
        "DELTAFLOW_USAGE_FLUSH_SECONDS": "0.2",  # the usage chart is compared with GET /v1/usage
    }
    _cli(env, "users", "create", "--tenant", "browser", "--email", EMAIL, "--role", "admin", "--password-stdin",
         stdin=PASSWORD + "\n")  # fmt: skip
    admin_key = _cli(env, "keys", "create", "--tenant", "browser", "--role", "admin").strip().splitlines()[-1]
    try:
        async with serve(env=env) as (_, base_url):
            yield base_url, admin_key
    finally:
        await truncate_all(postgres_url)


async def _snapshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def _serious_violations(browser: Browser, base_url: str, cookies: list[Any], path: str) -> list[str]:
    """axe-core on one page, in a context that may inject the script (our CSP rightly forbids it otherwise)."""
    context = await browser.new_context(bypass_csp=True, base_url=base_url)
    try:
        await context.add_cookies(cookies)
        page = await context.new_page()
        await page.goto(path)
        await page.add_script_tag(path=str(AXE))
        result = await page.evaluate("async () => (await axe.run(document)).violations")
        return [
            f"{path}: {v['id']} ({v['impact']}): {v['help']}"
            for v in result
            if v.get("impact") in {"serious", "critical"}
        ]
    finally:
        await context.close()


async def _usage_total(api: httpx.AsyncClient, admin_key: str) -> int:
    """Today's total as GET /v1/usage reports it (that request is counted after it answers, not in its own report)."""
    report = await api.get("/v1/usage", headers={"X-API-Key": admin_key})
    return int(report.json()["totals"]["requests"])


async def _status_within(client: httpx.AsyncClient, secret: str, expected: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (status := (await client.get("/v1/me", headers={"X-API-Key": secret})).status_code) != expected:
        assert time.monotonic() < deadline, f"/v1/me answered {status}, not {expected}, after {seconds} s"
        await asyncio.sleep(0.05)


async def _sign_in(page: Page) -> None:
    await page.goto("/console/login")
    await _snapshot(page, "login")
    await page.fill("input[name=email]", EMAIL)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("[data-testid=sign-in]")
    await page.wait_for_url("**/console/keys")


async def _create_key(page: Page, api: httpx.AsyncClient) -> str:
    await page.click("summary")
    await page.fill("input[name=name]", "browser-bot")
    await page.click("[data-testid=create-key]")
    secret = (await page.text_content("[data-testid=secret]") or "").strip()
    assert secret.startswith("dfk_")
    await _snapshot(page, "keys-created")
    assert (await api.get("/v1/me", headers={"X-API-Key": secret})).status_code == 200
    return secret


async def _rotate_now(page: Page, api: httpx.AsyncClient, secret: str) -> str:
    row = page.locator("[data-testid=key-row]", has_text="browser-bot")
    await row.locator("[data-testid=grace]").select_option("0")
    await row.locator("[data-testid=rotate]").click()
    await page.wait_for_function(
        "(old) => document.querySelector('[data-testid=secret]').textContent.trim() !== old", arg=secret
    )
    successor = (await page.text_content("[data-testid=secret]") or "").strip()
    assert successor.startswith("dfk_")
    assert successor != secret
    await _status_within(api, successor, 200, 1.0)
    await _status_within(api, secret, 401, 1.0)  # "old key stops now"
    return successor


async def _revoke(page: Page, api: httpx.AsyncClient, secret: str) -> None:
    live = page.locator("[data-testid=key-row]", has_text="browser-bot").filter(
        has=page.locator("[data-testid=revoke]")
    )
    await live.locator("[data-testid=revoke]").click()
    confirm = page.locator("[data-testid=confirm-revoke]")
    assert "browser-bot" in (await confirm.text_content() or "")
    await _snapshot(page, "keys-revoke-confirmation")
    await confirm.click()
    await page.wait_for_selector("[data-testid=notice]")
    await _status_within(api, secret, 401, 1.0)
    await _snapshot(page, "keys-after-revoke")


async def _usage_matches_the_api(page: Page, api: httpx.AsyncClient, admin_key: str) -> None:
    await asyncio.sleep(1.0)  # every /v1 request so far flushed (every 0.2 s); console pages are not metered
    await page.goto("/console/usage")
    assert await page.locator("#usage-chart canvas").count() == 1, "uPlot drew the usage chart"
    shown = int(await page.text_content("[data-testid=total-requests]") or "-1")
    assert shown == await _usage_total(api, admin_key)
    assert shown >= 2  # the /v1/me calls answered 200 above (refused keys belong to no tenant)
    await _snapshot(page, "usage")


@needs_chromium
async def test_an_admin_signs_in_creates_rotates_and_revokes_a_key_in_chromium(
    console_server: tuple[str, str], chromium: Browser
) -> None:
    browser = chromium
    base_url, admin_key = console_server
    context = await browser.new_context(base_url=base_url)
    page = await context.new_page()
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as api:
        await _sign_in(page)
        secret = await _create_key(page, api)
        successor = await _rotate_now(page, api, secret)
        await _revoke(page, api, successor)
        for name in ("audit", "feeds", "webhook", "account"):
            await page.goto(f"/console/{name}")
            await _snapshot(page, name)
        await _usage_matches_the_api(page, api, admin_key)

        cookies = await context.cookies()
        violations: list[str] = []
        for name in ("keys", "usage", "audit", "feeds", "webhook", "account"):
            violations += await _serious_violations(browser, base_url, cookies, f"/console/{name}")
        violations += await _serious_violations(browser, base_url, [], "/console/login")
        assert violations == []

        await page.click("[data-testid=logout]")
        await page.wait_for_url("**/console/login")
        await page.goto("/console/keys")
        assert page.url.endswith("/console/login")
    await context.close()
