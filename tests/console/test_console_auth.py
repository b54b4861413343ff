"""Console sign-in, sessions and CSRF, in-process over real Postgres and Redis."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import func, select

from app.config import Settings
from app.console.service import ConsoleRole, UserService
from app.console.sessions import SESSION_PREFIX, SessionStore
from app.main import create_app
from app.models import AuditEvent, User
from tests.console.conftest import (
    MakeUser,
    browser,
    console_settings,
    hidden,
    session_cookies,
    sign_in,
    signed_in,
    user_maker,
)
from tests.helpers import running

COOKIE = "__Host-deltaflow_session"


async def _audit_count(app: FastAPI, action: str) -> int:
    async with app.state.session_factory() as session:
        query = select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)
        return int((await session.execute(query)).scalar_one())


async def test_sign_in_sets_a_host_only_strict_cookie_and_lands_on_the_keys_page(
    console_app: FastAPI, make_user: MakeUser
) -> None:
    await make_user()
    async with browser(console_app) as client:
        answer = await sign_in(client, "ADA@example.com")  # emails compare without regard to case
        assert answer.status_code == 303
        assert answer.headers["location"] == "/console/keys"
        cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(COOKIE))
        for attribute in ("Path=/", "HttpOnly", "SameSite=Strict", "Secure"):
            assert attribute in cookie
        assert "Domain" not in cookie
        page = await client.get("/console/keys")
        assert page.status_code == 200
        assert "ada@example.com" in page.text
    assert await _audit_count(console_app, "user.login") == 1


async def test_pages_carry_a_strict_policy_and_static_files_a_year_of_cache(console_app: FastAPI) -> None:
    async with browser(console_app) as client:
        page = await client.get("/console/login")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-store"
        assert "<script>" not in page.text  # every script is a file: no inline code for the policy to allow
        script = page.text.split('src="', 1)[1].split('"', 1)[0]
        asset = await client.get(script)
        assert asset.status_code == 200
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        # The API is untouched by the console's middleware.
        probe = await client.get("/healthz")
        assert "content-security-policy" not in probe.headers


async def test_every_refusal_reads_the_same_and_each_is_audited(console_app: FastAPI, make_user: MakeUser) -> None:
    await make_user()
    disabled = await make_user(email="gone@example.com")
    async with console_app.state.session_factory() as session:
        account = await session.get(User, disabled.user.id)
        assert account is not None
        await UserService(session, console_app.state.settings, console_app.state.password_hasher).disable(
            account, None, via="test"
        )
        await session.commit()
    async with browser(console_app) as client:
        texts = set()
        for email, password in [
            ("nobody@example.com", "whatever-password"),
            ("ada@example.com", "a wrong password!"),
            ("gone@example.com", "correct horse battery staple"),
        ]:
            answer = await sign_in(client, email, password)
            assert answer.status_code == 200
            texts.add(answer.text.split('data-testid="login-error">', 1)[1].split("<", 1)[0])
        assert len(texts) == 1
    assert await _audit_count(console_app, "user.login_failed") == 1
    assert await _audit_count(console_app, "user.login_refused") == 1


async def test_five_failures_lock_the_account_even_for_the_right_password(
    settings: Settings, make_user: MakeUser, console_app: FastAPI
) -> None:
    await make_user()
    async with browser(console_app) as client:
        for _ in range(5):
            assert "login-error" in (await sign_in(client, "ada@example.com", "wrong password 123")).text
        locked = await sign_in(client, "ada@example.com")
        assert locked.status_code == 200
        assert "login-error" in locked.text
    assert await _audit_count(console_app, "user.locked") == 1
    assert await _audit_count(console_app, "user.login_refused") == 1
    async with console_app.state.session_factory() as session:
        user = (await session.execute(select(User))).scalar_one()
        assert user.locked_until is not None
        assert user.lockouts == 1


async def test_a_login_form_post_without_its_token_or_from_another_site_is_refused(
    console_app: FastAPI, make_user: MakeUser
) -> None:
    await make_user()
    async with browser(console_app) as client:
        form = await client.get("/console/login")
        no_token = await client.post("/console/login", data={"email": "ada@example.com", "password": "x" * 20})
        assert no_token.status_code == 403
        cross = await client.post(
            "/console/login",
            data={"csrf": hidden(form.text), "email": "ada@example.com", "password": "correct horse battery staple"},
            headers={"sec-fetch-site": "cross-site"},
        )
        assert cross.status_code == 403
        assert COOKIE not in cross.headers.get("set-cookie", "")
        forged_origin = await client.post(
            "/console/login",
            data={"csrf": hidden(form.text)},
            headers={"sec-fetch-site": "", "origin": "https://evil.example"},
        )
        assert forged_origin.status_code == 403


async def test_unsafe_requests_need_the_session_token(console_app: FastAPI, make_user: MakeUser) -> None:
    await make_user()
    async with browser(console_app) as client:
        token = await signed_in(client, "ada@example.com")
        refused = await client.post("/console/keys", data={"name": "bot"})
        assert refused.status_code == 403
        wrong = await client.post("/console/keys", data={"name": "bot"}, headers={"x-csrf-token": "nope"})
        assert wrong.status_code == 403
        created = await client.post("/console/keys", data={"name": "bot", "csrf": token})
        assert created.status_code == 200, created.text
        assert 'data-testid="secret"' in created.text


async def test_a_session_id_offered_before_sign_in_is_never_adopted(console_app: FastAPI, make_user: MakeUser) -> None:
    await make_user()
    async with browser(console_app) as client:
        client.cookies.set(COOKIE, "attacker-chosen-session-id", domain="testserver.local")
        await signed_in(client, "ada@example.com")
        issued = session_cookies(client)
        assert issued - {"attacker-chosen-session-id"}, "a fresh id was issued"
    async with browser(console_app) as attacker:
        attacker.cookies.set(COOKIE, "attacker-chosen-session-id", domain="testserver.local")
        assert (await attacker.get("/console/keys")).status_code == 303


async def test_signing_in_again_ends_the_previous_session(console_app: FastAPI, make_user: MakeUser) -> None:
    await make_user()
    async with browser(console_app) as client:
        await signed_in(client, "ada@example.com")
        (first,) = session_cookies(client)
        await signed_in(client, "ada@example.com")
        assert session_cookies(client) != {first}
    async with browser(console_app) as other:
        other.cookies.set(COOKIE, first, domain="testserver.local")
        assert (await other.get("/console/keys")).status_code == 303


async def test_sessions_expire_when_idle_and_at_the_absolute_limit(settings: Settings, redis_client: Redis) -> None:
    for index, overrides in enumerate([{"console_session_idle_seconds": 1}, {"console_session_absolute_seconds": 2}]):
        app = create_app(console_settings(settings, **overrides))
        async with running(app), browser(app) as client:
            email = f"expiry{index}@example.com"
            await user_maker(app, app.state.settings)(email=email)
            await signed_in(client, email)
            if index == 1:
                for _ in range(5):  # kept busy: the idle timeout never fires, the absolute one does
                    await asyncio.sleep(0.5)
                    await client.get("/console/keys")
            else:
                await asyncio.sleep(1.2)
            assert (await client.get("/console/keys")).status_code == 303, overrides
        await redis_client.flushdb()


async def test_page_views_renew_the_session_at_most_once_per_renew_period(
    settings: Settings, redis_client: Redis
) -> None:
    app = create_app(console_settings(settings, console_session_idle_seconds=2, console_session_renew_seconds=1))
    async with running(app), browser(app) as client:
        await user_maker(app, app.state.settings)(email="busy@example.com")
        await signed_in(client, "busy@example.com")
        (key,) = await redis_client.keys(SESSION_PREFIX + "*")
        stored = await redis_client.get(key)
        assert (await client.get("/console/keys")).status_code == 200
        assert await redis_client.get(key) == stored  # within the renew period: no write
        for _ in range(6):  # 3.6 s of activity, past the 2 s idle timeout: renewals keep the session alive
            await asyncio.sleep(0.6)
            assert (await client.get("/console/keys")).status_code == 200
        assert await redis_client.get(key) != stored


async def test_sign_out_destroys_the_session_server_side(
    console_app: FastAPI, make_user: MakeUser, redis_client: Redis
) -> None:
    await make_user()
    async with browser(console_app) as client:
        token = await signed_in(client, "ada@example.com")
        (stolen,) = session_cookies(client)
        assert len(await redis_client.keys(SESSION_PREFIX + "*")) == 1
        stored = [key if isinstance(key, str) else key.decode() for key in await redis_client.keys("*")]
        assert not any(stolen in key for key in stored), "Redis holds only hashes of session ids"
        out = await client.post("/console/logout", data={"csrf": token})
        assert out.status_code == 303
    assert await redis_client.keys(SESSION_PREFIX + "*") == []
    async with browser(console_app) as thief:
        thief.cookies.set(COOKIE, stolen, domain="testserver.local")
        assert (await thief.get("/console/keys")).status_code == 303
    assert await _audit_count(console_app, "user.logout") == 1


async def test_a_disabled_user_and_a_password_change_end_the_other_sessions(
    console_app: FastAPI, make_user: MakeUser
) -> None:
    account = await make_user()
    store: SessionStore = console_app.state.console_sessions
    async with browser(console_app) as laptop, browser(console_app) as phone:
        token = await signed_in(laptop, "ada@example.com")
        await signed_in(phone, "ada@example.com")
        changed = await laptop.post(
            "/console/account/password",
            data={
                "csrf": token,
                "current_password": account.password,
                "new_password": "another long passphrase",
                "confirm_password": "another long passphrase",
            },
        )
        assert changed.status_code == 200, changed.text
        assert (await phone.get("/console/keys")).status_code == 303
        assert (await laptop.get("/console/keys")).status_code == 200
        assert len(await store.list_for_user(account.user.id)) == 1
        await store.destroy_all_for_user(account.user.id)  # what `users disable` does after disabling
        assert (await laptop.get("/console/keys")).status_code == 303


async def test_a_console_without_redis_is_a_503_page_and_the_api_still_answers(settings: Settings) -> None:
    app = create_app(console_settings(settings, redis_url="redis://127.0.0.1:1/0", redis_socket_timeout_seconds=0.2))
    async with running(app), browser(app) as client:
        client.cookies.set(COOKIE, "some-session", domain="testserver.local")
        page = await client.get("/console/keys")
        assert page.status_code == 503
        assert page.headers["retry-after"] == "30"
        assert "API is not affected" in page.text
        assert (await client.get("/healthz")).status_code == 200


async def test_a_user_acts_with_exactly_the_scopes_of_the_matching_key_role(
    console_app: FastAPI, make_user: MakeUser
) -> None:
    await make_user(ConsoleRole.VIEWER, email="viewer@example.com")
    async with browser(console_app) as client:
        landed = await sign_in(client, "viewer@example.com")
        assert landed.headers["location"] == "/console/feeds"
        feeds = await client.get("/console/feeds")
        assert 'href="/console/keys"' not in feeds.text  # the nav offers only what the role may open
        page = await client.get("/console/keys")  # a reader key may not list keys: neither may a viewer
        assert page.status_code == 403
        assert "keys:read" in page.text
        token = (await client.get("/console/account")).text.split('name="csrf-token" content="', 1)[1].split('"')[0]
        refused = await client.post("/console/keys", data={"name": "x", "csrf": token})
        assert refused.status_code == 403
