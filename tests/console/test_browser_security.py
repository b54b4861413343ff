"""The console's defences in real Chromium against real servers: lockout, a cross-site form post, session fixation,
idle expiry, a disabled user signed out at once, and two instances behind real nginx sharing sessions (one stopped
mid-session)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page

from tests.conftest import TEST_REDIS_URL, truncate_all
from tests.console.test_browser import EMAIL, PASSWORD, _cli, needs_chromium
from tests.e2e.test_nginx import NGINX, nginx_in_front
from tests.e2e.test_serve import serve
from tests.helpers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COOKIE = "__Host-deltaflow_session"


def _env(postgres_url: str, **extra: str) -> dict[str, str]:
    return {
        "DELTAFLOW_DATABASE_URL": postgres_url,
        "DELTAFLOW_REDIS_URL": TEST_REDIS_URL,
        "DELTAFLOW_RATE_LIMIT_PER_SECOND": "0",
        "DELTAFLOW_FEEDS": "",
        **extra,
    }


@asynccontextmanager
async def console_user(postgres_url: str) -> AsyncIterator[None]:
    _cli(_env(postgres_url), "users", "create", "--tenant", "browser", "--email", EMAIL, "--role", "admin",
         "--password-stdin", stdin=PASSWORD + "\n")  # fmt: skip
    try:
        yield
    finally:
        await truncate_all(postgres_url)


async def _try_sign_in(page: Page, password: str) -> None:
    await page.goto("/console/login")
    await page.fill("input[name=email]", EMAIL)
    await page.fill("input[name=password]", password)
    await page.click("[data-testid=sign-in]")
    await page.wait_for_load_state()


async def _signed_in_page(browser: Browser, base_url: str) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(base_url=base_url)
    page = await context.new_page()
    await _try_sign_in(page, PASSWORD)
    assert page.url.endswith("/console/keys"), page.url
    return context, page


async def _attacker_page(target: str) -> tuple[asyncio.Server, str]:
    """A page on another origin (another port) whose form posts to the console, as a cross-site attack would."""
    html = (
        "<!doctype html><html><body><form method=post action='" + target + "/console/keys'>"
        "<input name=name value=planted><button id=go type=submit>win a prize</button></form></body></html>"
    ).encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
                     % len(html) + html)  # fmt: skip
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", free_port())
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@needs_chromium
async def test_lockout_cross_site_post_fixation_and_disabling_in_chromium(
    postgres_url: str, redis_client: object, chromium: Browser
) -> None:
    env = _env(postgres_url)
    async with console_user(postgres_url), serve(env=env) as (_, base_url):
        # A planted session id is never adopted: sign-in issues a new one and the planted one stays worthless.
        context = await chromium.new_context(base_url=base_url)
        planted = {"name": COOKIE, "value": "planted-id", "domain": "127.0.0.1", "path": "/", "secure": True}
        await context.add_cookies([planted])  # type: ignore[list-item]
        page = await context.new_page()
        await _try_sign_in(page, PASSWORD)
        assert page.url.endswith("/console/keys")
        assert {c["value"] for c in await context.cookies() if c["name"] == COOKIE} - {"planted-id"}

        # A form on another origin posting to the console with the victim's cookie is refused.
        server, attacker = await _attacker_page(base_url)
        try:
            evil = await context.new_page()
            await evil.goto(attacker)
            async with evil.expect_navigation():
                await evil.click("#go")
            assert "sent from another site" in (await evil.content())
        finally:
            server.close()
        await page.goto("/console/keys")
        assert "planted" not in (await page.content())

        # Disabling the user (CLI, shared Redis) signs the browser out at once.
        _cli(env, "users", "disable", "--email", EMAIL)
        await page.goto("/console/keys")
        assert page.url.endswith("/console/login")
        await context.close()

        # Five failures lock the account: the right password is then refused too, with the same message.
        _cli(env, "users", "reset-password", "--email", EMAIL, "--password-stdin", stdin=PASSWORD + "\n")
        lockout = await chromium.new_context(base_url=base_url)
        page = await lockout.new_page()
        for _ in range(5):
            await _try_sign_in(page, "not the password at all")
        message = await page.text_content("[data-testid=login-error]")
        await _try_sign_in(page, PASSWORD)
        assert page.url.endswith("/console/login")
        assert await page.text_content("[data-testid=login-error]") == message
        await lockout.close()


@needs_chromium
async def test_an_idle_session_ends_in_chromium(postgres_url: str, redis_client: object, chromium: Browser) -> None:
    env = _env(postgres_url, DELTAFLOW_CONSOLE_SESSION_IDLE_SECONDS="2")
    async with console_user(postgres_url), serve(env=env) as (_, base_url):
        context, page = await _signed_in_page(chromium, base_url)
        await page.goto("/console/account")  # active: still signed in
        assert page.url.endswith("/console/account")
        await asyncio.sleep(2.5)
        await page.goto("/console/account")
        assert page.url.endswith("/console/login")
        await context.close()


@needs_chromium
@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs it with apt-get)")
async def test_two_instances_behind_nginx_share_sessions_and_survive_losing_one(
    postgres_url: str, redis_client: object, chromium: Browser, nginx_dir: Path
) -> None:
    env = _env(postgres_url)
    async with console_user(postgres_url), AsyncExitStack() as stack:
        (first, url_a) = await stack.enter_async_context(serve(env=env))
        (_second, url_b) = await stack.enter_async_context(serve(env=env))
        ports = [int(url_a.rsplit(":", 1)[1]), int(url_b.rsplit(":", 1)[1])]
        front, access_log = await stack.enter_async_context(nginx_in_front(ports, nginx_dir))
        context, page = await _signed_in_page(chromium, front)
        for _ in range(6):  # least_conn spreads these over both instances
            await page.goto("/console/account")
            assert page.url.endswith("/console/account")
        upstreams = {line.split('"upstream":"', 1)[1].split('"', 1)[0] for line in access_log.read_text().splitlines()}
        assert len({u for u in upstreams if u}) == 2, upstreams

        first.send_signal(signal.SIGKILL)  # one instance gone mid-session
        first.wait(timeout=10)
        await page.goto("/console/keys")
        await page.click("summary")
        await page.fill("input[name=name]", "after-failover")
        await page.click("[data-testid=create-key]")
        secret = (await page.text_content("[data-testid=secret]") or "").strip()
        assert secret.startswith("dfk_")
        await context.close()
