"""Console fixtures: an app on real Postgres and Redis, users created through the service, and a signed-in
browser-like client (httpx over https, so the `__Host-` cookie with Secure is kept and sent back)."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from playwright.async_api import Browser, async_playwright

from app.config import Settings
from app.console.passwords import PasswordHasher
from app.console.service import ConsoleRole, UserService
from app.keys.admin import ensure_tenant
from app.main import create_app
from app.models import User
from tests.conftest import make_settings
from tests.helpers import running

PASSWORD = "correct horse battery staple"
CHROMIUM = os.environ.get("DELTAFLOW_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no calls to Google's services on a machine without internet
    "--disable-component-update",
    "--disable-sync",
]
ORIGIN = "https://testserver"


@dataclass(frozen=True)
class ConsoleUserFixture:
    user: User
    email: str
    password: str


MakeUser = Callable[..., Awaitable[ConsoleUserFixture]]


def console_settings(settings: Settings, **overrides: object) -> Settings:
    return make_settings(**{**settings.model_dump(), **overrides})


@pytest.fixture
async def console_app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with running(app):
        yield app


def browser(app: FastAPI) -> AsyncClient:
    """A client that behaves like a same-origin browser page: https, cookies kept, the fetch metadata sent."""
    return AsyncClient(transport=ASGITransport(app=app), base_url=ORIGIN, headers={"sec-fetch-site": "same-origin"})


def user_maker(app: FastAPI, settings: Settings) -> MakeUser:
    async def make(
        role: ConsoleRole = ConsoleRole.ADMIN, *, tenant: str = "acme", email: str = "ada@example.com"
    ) -> ConsoleUserFixture:
        async with app.state.session_factory() as session:
            owner = await ensure_tenant(session, tenant)
            user = await UserService(session, settings, PasswordHasher(settings)).create(
                owner, email, PASSWORD, role, via="test"
            )
            await session.commit()
        return ConsoleUserFixture(user, email, PASSWORD)

    return make


@pytest.fixture
def make_user(console_app: FastAPI, settings: Settings) -> MakeUser:
    return user_maker(console_app, settings)


def hidden(page: str, name: str = "csrf") -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match is not None, f"no hidden {name} field"
    return match.group(1)


def meta_csrf(page: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]*)"', page)
    assert match is not None
    return match.group(1)


async def sign_in(client: AsyncClient, email: str, password: str = PASSWORD) -> Response:
    form = await client.get("/console/login")
    return await client.post("/console/login", data={"csrf": hidden(form.text), "email": email, "password": password})


async def signed_in(client: AsyncClient, email: str) -> str:
    """Sign in and return the CSRF token of the keys page."""
    answer = await sign_in(client, email)
    assert answer.status_code == 303, answer.text
    page = await client.get("/console/keys")
    assert page.status_code == 200, page.text
    return meta_csrf(page.text)


def session_cookies(client: AsyncClient, name: str = "__Host-deltaflow_session") -> set[str]:
    """Every value of the session cookie in the client's jar (a planted one and the server's may coexist)."""
    return {cookie.value or "" for cookie in client.cookies.jar if cookie.name == name}


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium through Playwright's `executable_path` (browser downloads are impossible here)."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()
