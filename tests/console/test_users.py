"""Console accounts: email rules, the password policy, argon2 parameters and rehashing, the users CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from passlib.context import CryptContext

from app.config import Settings
from app.console.passwords import PasswordHasher, PasswordRejected, check_policy, common_passwords
from app.console.service import EmailInvalid, normalise_email
from app.models.user import EMAIL_MAX_LENGTH
from tests.conftest import make_settings

DELTAFLOW = str(Path(sys.executable).parent / "deltaflow")


def test_emails_are_lowercased_and_bounded_by_the_column() -> None:
    assert normalise_email("  Ada@Example.COM ") == "ada@example.com"
    local = "a" * (EMAIL_MAX_LENGTH - len("@example.com"))
    assert normalise_email(f"{local}@example.com") == f"{local}@example.com"
    for bad in (f"a{local}@example.com", "no-at-sign", "two@@example.com", "sp ace@example.com", "a@b"):
        with pytest.raises(EmailInvalid):
            normalise_email(bad)


@pytest.mark.parametrize(
    ("password", "accepted"),
    [
        ("short", False),
        ("x" * 11, False),
        ("x" * 12, True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("password1234", False),  # in the common list
        ("PASSWORD1234", False),  # compared without case
        ("correct horse battery staple", True),
    ],
)
def test_the_password_policy(password: str, accepted: bool) -> None:
    settings = make_settings()
    if accepted:
        assert check_policy(password, settings) == password
    else:
        with pytest.raises(PasswordRejected) as refused:
            check_policy(password, settings)
        assert password not in refused.value.detail  # never echoed


def test_the_common_list_is_shipped_and_large() -> None:
    assert len(common_passwords()) > 10_000
    assert "password1234" in common_passwords()


async def test_argon2id_at_owasp_minimum_and_a_weaker_hash_is_rehashed() -> None:
    hasher = PasswordHasher(make_settings())
    stored = await hasher.hash_async("correct horse battery staple")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert await hasher.verify_async("correct horse battery staple", stored) == (True, False)
    assert await hasher.verify_async("wrong horse battery staple", stored) == (False, False)
    weaker = CryptContext(schemes=["argon2"], argon2__type="ID", argon2__memory_cost=8192, argon2__time_cost=1)
    old = weaker.hash("correct horse battery staple")
    assert await hasher.verify_async("correct horse battery staple", old) == (True, True)
    assert await hasher.verify_async("anything at all here", None) == (False, False)  # decoy: same work


def _users(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DELTAFLOW, "users", *args], env=env, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def test_users_cli_creates_lists_resets_and_disables(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELTAFLOW_")}
    env |= {"DELTAFLOW_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/u.db", "DELTAFLOW_REDIS_URL": "memory://"}
    subprocess.run([DELTAFLOW, "migrate"], env=env, check=True, capture_output=True)
    boot = _users(env, "bootstrap", "--if-missing")
    assert boot.returncode == 0, boot.stderr
    assert boot.stdout.startswith("console login: operator@deltaflow.local  password (shown once): ")
    assert _users(env, "bootstrap", "--if-missing").stdout == ""
    weak = _users(env, "create", "--tenant", "acme", "--email", "b@example.com", "--password-stdin", stdin="short\n")
    assert weak.returncode == 1
    assert "12 to 128" in weak.stderr
    made = _users(env, "create", "--tenant", "acme", "--email", "B@Example.com", "--role", "admin", "--password-stdin",
                  stdin="a long enough passphrase\n")  # fmt: skip
    assert made.returncode == 0, made.stderr
    twice = _users(env, "create", "--tenant", "acme", "--email", "b@example.com", "--password-stdin",
                   stdin="a long enough passphrase\n")  # fmt: skip
    assert twice.returncode == 1
    listed = _users(env, "list", "--tenant", "acme").stdout
    assert "b@example.com" in listed
    assert "operator@deltaflow.local" not in listed
    reset = _users(env, "reset-password", "--email", "b@example.com", "--generate")
    assert reset.returncode == 0, reset.stderr
    assert len(reset.stdout.strip()) == 24
    assert _users(env, "disable", "--email", "b@example.com").returncode == 0
    assert "disabled" in _users(env, "list").stdout


def test_settings_bound_the_argon2_parameters() -> None:
    with pytest.raises(ValueError, match="console_argon2_memory_kib"):
        Settings.model_validate({"console_argon2_memory_kib": 1024})
