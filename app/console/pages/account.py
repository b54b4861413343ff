"""The account page: change password, active sessions with revoke, sign out everywhere.

A password change ends every other session of the user (on every instance at once: sessions live only in Redis)
and gives the current one a new id."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.console import repository
from app.console.passwords import PasswordRejected
from app.console.security import cookie_header, session_cookie_name
from app.console.service import CurrentPasswordWrong, UserService
from app.console.sessions import SessionStore
from app.console.web import checked_form, current_user, redirect, render
from app.core.deps import DbSession, SettingsDep
from app.core.errors import request_id_of

router = APIRouter(prefix="/console/account", include_in_schema=False)


@router.get("")
async def account_page(request: Request) -> Response:
    user = current_user(request)
    store: SessionStore = request.app.state.console_sessions
    sessions = await store.list_for_user(user.session.user_uuid)
    return render(request, "account.html", {"sessions": sessions}, user=user)


@router.post("/password")
async def change_password(request: Request, db: DbSession, settings: SettingsDep) -> Response:
    user = current_user(request)
    form = await checked_form(request, user)
    if form.get("new_password") != form.get("confirm_password"):
        return render(request, "error.html", {"message": "The two new passwords differ."}, user=user, status=422)
    account = await repository.get_user(db, user.session.user_uuid)
    if account is None:
        return redirect(request, "/console/login")
    service = UserService(db, settings, request.app.state.password_hasher)
    try:
        await service.change_password(
            account, form.get("current_password"), form.get("new_password"), request_id_of(request.scope)
        )
    except (PasswordRejected, CurrentPasswordWrong) as error:
        return render(request, "error.html", {"message": error.detail}, user=user, status=422)
    store: SessionStore = request.app.state.console_sessions
    await store.destroy_all_for_user(user.session.user_uuid)
    session_id, _ = await store.create(
        user_id=account.id, tenant_id=account.tenant_id, email=account.email, role=account.role,
        address=request.client.host if request.client else None, user_agent=request.headers.get("user-agent", ""),
    )  # fmt: skip
    response = render(
        request, "notice.html", {"message": "Password changed; every other session has ended."}, user=user
    )
    cookie = cookie_header(
        settings, session_cookie_name(settings), session_id, settings.console_session_absolute_seconds
    )
    response.headers.append("set-cookie", cookie)
    response.headers["hx-refresh"] = "true"  # the page's CSRF token belonged to the old session
    return response


@router.post("/sessions/{id_hash}/revoke")
async def revoke_session(id_hash: str, request: Request, db: DbSession, settings: SettingsDep) -> Response:
    user = current_user(request)
    await checked_form(request, user)
    store: SessionStore = request.app.state.console_sessions
    if await store.destroy_by_hash(user.session.user_uuid, id_hash):
        UserService(db, settings, request.app.state.password_hasher).record(
            user.principal, "user.session_revoked", request_id_of(request.scope), {"session": id_hash[:12]}
        )
    if id_hash == user.session.id_hash:
        return redirect(request, "/console/login")
    return redirect(request, "/console/account")


@router.post("/sessions/revoke-all")
async def sign_out_everywhere(request: Request, db: DbSession, settings: SettingsDep) -> Response:
    user = current_user(request)
    await checked_form(request, user)
    store: SessionStore = request.app.state.console_sessions
    ended = await store.destroy_all_for_user(user.session.user_uuid)
    UserService(db, settings, request.app.state.password_hasher).record(
        user.principal, "user.signed_out_everywhere", request_id_of(request.scope), {"sessions": ended}
    )
    response = redirect(request, "/console/login")
    response.headers.append("set-cookie", cookie_header(settings, session_cookie_name(settings), "", 0))
    return response
