"""Sign-in and sign-out pages."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.console.middleware import SESSION_STATE
from app.console.passwords import PasswordHasher
from app.console.security import (
    LOGIN_TOKEN_SECONDS,
    cookie_header,
    cookie_of,
    login_cookie_name,
    login_token_valid,
    new_login_token,
    session_cookie_name,
)
from app.console.service import LoginContext, UserService
from app.console.sessions import SessionStore
from app.console.throttle import AddressThrottle
from app.console.web import checked_form, current_user, redirect, render
from app.core.deps import DbSession, SettingsDep
from app.core.errors import request_id_of

router = APIRouter(prefix="/console", include_in_schema=False)
REFUSED = "The email or password is not right, or this account cannot sign in at the moment."


def _login_page(request: Request, settings: SettingsDep, *, error: str | None = None, status: int = 200) -> Response:
    nonce, token = new_login_token(settings)
    response = render(request, "login.html", {"login_token": token, "error": error}, status=status)
    response.headers.append(
        "set-cookie", cookie_header(settings, login_cookie_name(settings), nonce, LOGIN_TOKEN_SECONDS)
    )
    return response


@router.get("")
async def console_home(request: Request) -> Response:
    return redirect(request, current_user(request).home)


@router.get("/login")
async def login_form(request: Request, settings: SettingsDep) -> Response:
    # Shown even to a signed-in browser (to switch accounts): signing in again ends the session it had.
    return _login_page(request, settings)


@router.post("/login")
async def login(request: Request, settings: SettingsDep, db: DbSession) -> Response:
    form = await checked_form(request, None)
    if not login_token_valid(settings, cookie_of(request.scope, login_cookie_name(settings)), form.get("csrf")):
        return _login_page(request, settings, error="The form expired. Please sign in again.", status=403)
    address = request.client.host if request.client else None
    wait = await AddressThrottle(request.app.state.redis, settings).attempt(address)
    if wait is not None:
        minutes = max(wait // 60, 1)
        return _login_page(
            request, settings, error=f"Too many attempts from your network; try again in {minutes} min.", status=429
        )
    hasher: PasswordHasher = request.app.state.password_hasher
    users = UserService(db, settings, hasher)
    found = await users.authenticate(
        form.get("email"), form.get("password"), LoginContext(address, request_id_of(request.scope))
    )
    if found is None:
        return _login_page(request, settings, error=REFUSED, status=200)
    user, tenant = found
    store: SessionStore = request.app.state.console_sessions
    previous = request.scope.get("state", {}).get(SESSION_STATE)
    if previous is not None:  # signing in again ends the session the browser had: never two live ids for it
        await store.destroy(previous)
    session_id, _ = await store.create(
        user_id=user.id, tenant_id=tenant.id, email=user.email, role=user.role, address=address,
        user_agent=request.headers.get("user-agent", ""),
    )  # fmt: skip
    response = redirect(
        request, "/console/feeds" if user.role == "viewer" else "/console/keys"
    )  # viewers: no keys:read
    response.headers.append(
        "set-cookie",
        cookie_header(settings, session_cookie_name(settings), session_id, settings.console_session_absolute_seconds),
    )
    response.headers.append("set-cookie", cookie_header(settings, login_cookie_name(settings), "", 0))
    return response


@router.post("/logout")
async def logout(request: Request, settings: SettingsDep, db: DbSession) -> Response:
    user = current_user(request)
    await checked_form(request, user)
    store: SessionStore = request.app.state.console_sessions
    await store.destroy(user.session)
    UserService(db, settings, request.app.state.password_hasher).record(
        user.principal, "user.logout", request_id_of(request.scope)
    )
    response = redirect(request, "/console/login")
    response.headers.append("set-cookie", cookie_header(settings, session_cookie_name(settings), "", 0))
    return response
