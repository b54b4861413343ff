"""The `deltaflow` console script, run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_REDIS_URL
from tests.helpers import free_port

DELTAFLOW = str(Path(sys.executable).parent / "deltaflow")


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DELTAFLOW_")}
    environment.update(env)
    return subprocess.run([DELTAFLOW, *args], capture_output=True, text=True, env=environment, timeout=60, check=False)


def test_migrate_builds_an_embedded_database_from_nothing(tmp_path: Path) -> None:
    database = tmp_path / "nested" / "deltaflow.db"
    result = _run("migrate", DELTAFLOW_DATABASE_URL=f"sqlite+aiosqlite:///{database}")
    assert result.returncode == 0, result.stderr
    assert "migrated to revision" in result.stdout
    assert database.exists()
    again = _run("migrate", DELTAFLOW_DATABASE_URL=f"sqlite+aiosqlite:///{database}")
    assert again.returncode == 0, "migrating twice is a no-op"


def test_check_prints_config_without_secrets_and_tests_connectivity(postgres_url: str) -> None:
    result = _run(
        "check",
        DELTAFLOW_DATABASE_URL=postgres_url,
        DELTAFLOW_REDIS_URL=TEST_REDIS_URL,
        DELTAFLOW_SECRET_KEY="very-secret-value-that-must-not-print",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "very-secret-value" not in result.stdout
    assert '"secret_key": "**********"' in result.stdout
    assert "database   ok" in result.stdout
    assert "redis      ok" in result.stdout


def test_check_fails_when_the_database_is_unreachable() -> None:
    result = _run(
        "check",
        DELTAFLOW_DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x",
        DELTAFLOW_REDIS_URL=TEST_REDIS_URL,
    )
    assert result.returncode == 1
    assert "database   fail" in result.stdout


def test_invalid_configuration_is_reported_without_a_traceback() -> None:
    result = _run("check", DELTAFLOW_ENVIRONMENT="production")
    assert result.returncode == 2
    assert "DELTAFLOW_SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_command_is_a_usage_error() -> None:
    result = _run("frobnicate")
    assert result.returncode == 2
    assert "usage: deltaflow" in result.stderr


@pytest.mark.parametrize("command", ["serve", "migrate", "check"])
def test_help_lists_each_command(command: str) -> None:
    result = _run("--help")
    assert command in result.stdout
