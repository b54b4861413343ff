"""Console users: accounts, sign-in with lockout, password changes. Services only flush; the caller commits.

A user acts with exactly the scopes an API key of the matching role holds (`viewer` acts as a `reader` key), so the
console calls the same key, tenant and usage services as the API, with a `Principal` that names the user.

Sign-in never raises for a refused login: the failure bookkeeping (counts, lockouts) and its audit event must be
committed, and an exception would roll them back. Unknown email, wrong password, locked and disabled accounts all
come back as `None` after the same work (one argon2 verification), so neither the answer nor its timing tells
which it was; the audit trail (and the log, for unknown emails) does.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import repository as audit
from app.auth.principal import Principal
from app.auth.scopes import ROLE_SCOPES, Role
from app.config import Settings
from app.console import repository
from app.console.passwords import PasswordHasher, check_policy
from app.core.db_errors import register_constraint_problem
from app.core.errors import AppError
from app.core.logging import get_logger
from app.models import Tenant, User
from app.models.user import EMAIL_MAX_LENGTH

log = get_logger(__name__)
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")


class ConsoleRole(StrEnum):
    OPERATOR = "operator"
    ADMIN = "admin"
    VIEWER = "viewer"


KEY_ROLE = {ConsoleRole.OPERATOR: Role.OPERATOR, ConsoleRole.ADMIN: Role.ADMIN, ConsoleRole.VIEWER: Role.READER}


class UserEmailTaken(AppError):
    slug = "user-email-taken"
    title = "Email already in use"
    status = 409
    description = "Every console user has a distinct email (compared without regard to case)."


class EmailInvalid(AppError):
    slug = "email-invalid"
    title = "Invalid email address"
    status = 422
    description = "An email address is `local@domain.tld`, at most 254 characters, without spaces."


class CurrentPasswordWrong(AppError):
    slug = "current-password-wrong"
    title = "Current password is wrong"
    status = 403
    description = "Changing a password needs the current one."


register_constraint_problem(UserEmailTaken, "uq_users_email", "users.email")


def normalise_email(email: str) -> str:
    normalised = email.strip().lower()
    if len(normalised) > EMAIL_MAX_LENGTH or not _EMAIL.match(normalised):
        raise EmailInvalid("Give an address like name@example.com (at most 254 characters).")
    return normalised


def principal_of(user: User, tenant: Tenant, expires_at: datetime) -> Principal:
    """The user as the services see an API key of the same role (no key: `key_id` is None)."""
    role = KEY_ROLE[ConsoleRole(user.role)]
    return Principal(
        key_id=None,
        tenant_id=tenant.id,
        role=role,
        scopes=ROLE_SCOPES[role],
        expires_at=expires_at,
        name=user.email,
        user_id=user.id,
    )


@dataclass(frozen=True, slots=True)
class LoginContext:
    address: str | None
    request_id: str | None


class UserService:
    def __init__(
        self,
        session: AsyncSession,
        settings: Settings,
        hasher: PasswordHasher,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.session = session
        self.settings = settings
        self.hasher = hasher
        self.clock = clock

    async def create(self, tenant: Tenant, email: str, password: str, role: ConsoleRole, *, via: str) -> User:
        address = normalise_email(email)
        if await repository.get_user_by_email(self.session, address) is not None:
            raise UserEmailTaken(f"A user with the email {address} exists already.")
        now = self.clock()
        user = User(
            id=uuid.uuid4(),
            tenant_id=tenant.id,
            email=address,
            password_hash=await self.hasher.hash_async(check_policy(password, self.settings)),
            role=role.value,
            created_at=now,
            password_changed_at=now,
            failed_logins=0,
            lockouts=0,
        )
        repository.add_user(self.session, user)
        await self.session.flush()  # the unique email constraint decides a concurrent creation
        self._audit(user, "user.created", None, {"role": role.value, "email": address, "via": via})
        return user

    async def authenticate(self, email: str, password: str, context: LoginContext) -> tuple[User, Tenant] | None:
        now = self.clock()
        try:
            found = await repository.get_user_with_tenant(self.session, normalise_email(email))
        except EmailInvalid:
            found = None
        user = found[0] if found else None
        locked = user is not None and user.locked_until is not None and user.locked_until > now
        ok, rehash = await self.hasher.verify_async(password, None if user is None or locked else user.password_hash)
        if user is None or found is None:
            log.info("console.login_unknown_email", address=context.address)
            return None
        details: dict[str, object] = {"address": context.address}
        if locked:
            self._audit(user, "user.login_refused", context.request_id, {**details, "reason": "locked"})
            return None
        if user.disabled_at is not None:
            self._audit(user, "user.login_refused", context.request_id, {**details, "reason": "disabled"})
            return None
        if not ok:
            self._count_failure(user, now, context)
            return None
        user.failed_logins, user.failed_window_started_at, user.locked_until, user.lockouts = 0, None, None, 0
        user.last_login_at = now
        if rehash:  # stored with weaker argon2 parameters than the current settings
            user.password_hash = await self.hasher.hash_async(password)
        self._audit(user, "user.login", context.request_id, {**details, "rehashed": rehash})
        await self.session.flush()
        return user, found[1]

    def _count_failure(self, user: User, now: datetime, context: LoginContext) -> None:
        window = timedelta(seconds=self.settings.console_login_failure_window_seconds)
        if user.failed_window_started_at is None or now - user.failed_window_started_at > window:
            user.failed_window_started_at, user.failed_logins = now, 0
        user.failed_logins += 1
        details: dict[str, object] = {"address": context.address, "failures": user.failed_logins}
        if user.failed_logins >= self.settings.console_login_max_failures:
            user.lockouts += 1
            seconds = min(
                self.settings.console_lockout_base_seconds * 2 ** (user.lockouts - 1),
                self.settings.console_lockout_max_seconds,
            )
            user.locked_until = now + timedelta(seconds=seconds)
            user.failed_logins, user.failed_window_started_at = 0, None
            self._audit(user, "user.locked", context.request_id, {**details, "seconds": seconds})
        else:
            self._audit(user, "user.login_failed", context.request_id, details)

    async def change_password(self, user: User, current: str, new: str, request_id: str | None) -> None:
        ok, _ = await self.hasher.verify_async(current, user.password_hash)
        if not ok:
            raise CurrentPasswordWrong("The current password does not match.")
        await self.set_password(user, new, request_id, via="console")

    async def set_password(self, user: User, new: str, request_id: str | None, *, via: str) -> None:
        user.password_hash = await self.hasher.hash_async(check_policy(new, self.settings))
        user.password_changed_at = self.clock()
        user.failed_logins, user.failed_window_started_at, user.locked_until, user.lockouts = 0, None, None, 0
        await self.session.flush()
        self._audit(user, "user.password_changed", request_id, {"via": via})

    async def disable(self, user: User, request_id: str | None, *, via: str) -> None:
        if user.disabled_at is None:
            user.disabled_at = self.clock()
            await self.session.flush()
            self._audit(user, "user.disabled", request_id, {"via": via})

    def record(
        self, principal: Principal, action: str, request_id: str | None, details: dict[str, object] | None = None
    ) -> None:
        """An audit event with the signed-in user as actor (sign-out, session revocations)."""
        assert principal.user_id is not None  # noqa: S101 - console principals always name their user
        self._write(principal.tenant_id, principal.user_id, action, request_id, details)

    def _audit(self, user: User, action: str, request_id: str | None, details: dict[str, object] | None) -> None:
        self._write(user.tenant_id, user.id, action, request_id, details)

    def _write(
        self,
        tenant_id: uuid.UUID,
        user_id: uuid.UUID,
        action: str,
        request_id: str | None,
        details: dict[str, object] | None,
    ) -> None:
        audit.record(
            self.session,
            tenant_id=tenant_id,
            actor_key_id=None,
            actor_user_id=user_id,
            action=action,
            target=f"user:{user_id}",
            request_id=request_id,
            details=details or {},
        )
