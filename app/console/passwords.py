"""Password hashing and policy for console users (passlib's `CryptContext`, argon2id).

passlib comes from its maintained fork libpass (same `passlib` import; passlib 1.7.4 is unmaintained and its bcrypt
handler breaks with bcrypt >= 4.1). Hashing costs ~30 ms of CPU at the default argon2 parameters, so callers run
it off the event loop (`hash_async`, `verify_async`). A stored hash made with weaker parameters than the current
settings `needs_update` and is rehashed at the next successful login.

Policy (NIST SP 800-63B §5.1.1.2): 12 to 128 characters (settings), no composition rules, and not one of the
~11 600 most common passwords (`data/common_passwords.txt`, from zxcvbn's frequency list, MIT). Passwords are
never logged, and neither are hashes.
"""

from __future__ import annotations

import asyncio
import unicodedata
from functools import lru_cache
from pathlib import Path

from passlib.context import CryptContext

from app.config import Settings
from app.core.errors import AppError

COMMON_PASSWORDS_FILE = Path(__file__).parent / "data" / "common_passwords.txt"


class PasswordRejected(AppError):
    slug = "password-rejected"
    title = "Password not acceptable"
    status = 422
    description = "Passwords are 12 to 128 characters and not among the most common passwords."


def crypt_context(settings: Settings) -> CryptContext:
    return CryptContext(
        schemes=["argon2"],
        argon2__type="ID",
        argon2__memory_cost=settings.console_argon2_memory_kib,
        argon2__time_cost=settings.console_argon2_time_cost,
        argon2__parallelism=settings.console_argon2_parallelism,
    )


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line for line in lines if line and not line.startswith("#"))


def normalise(password: str) -> str:
    """NFKC, as NIST advises, so the same password typed on two keyboards hashes the same."""
    return unicodedata.normalize("NFKC", password)


def check_policy(password: str, settings: Settings) -> str:
    """The normalised password if acceptable; otherwise `PasswordRejected` saying which rule (never echoing it)."""
    normalised = normalise(password)
    low, high = settings.console_password_min_length, settings.console_password_max_length
    if not low <= len(normalised) <= high:
        raise PasswordRejected(f"Use {low} to {high} characters (this one has {len(normalised)}).")
    if normalised.lower() in common_passwords():
        raise PasswordRejected("This password is one of the most common ones; choose another.")
    return normalised


class PasswordHasher:
    """One per process: the context is built once from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.context = crypt_context(settings)
        # A hash of nothing anyone can type: verified against when the email is unknown, so an unknown account
        # costs the same time as a wrong password (no account enumeration by timing).
        self._decoy = self.context.hash("\x00decoy: no user has this password\x00")

    async def hash_async(self, password: str) -> str:
        return await asyncio.to_thread(self.context.hash, normalise(password))

    async def verify_async(self, password: str, stored_hash: str | None) -> tuple[bool, bool]:
        """(matches, needs a rehash). With no stored hash, spends the same time on a decoy and says no."""
        candidate = normalise(password)
        if stored_hash is None:
            await asyncio.to_thread(self.context.verify, candidate, self._decoy)
            return False, False
        ok = await asyncio.to_thread(self.context.verify, candidate, stored_hash)
        return ok, ok and self.context.needs_update(stored_hash)
