"""`deltaflow keys …` as a real process against the embedded database: the operator's console."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DELTAFLOW = str(Path(sys.executable).parent / "deltaflow")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DELTAFLOW_")}
    environment["DELTAFLOW_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path}/keys.db"
    environment["DELTAFLOW_REDIS_URL"] = "memory://"
    subprocess.run([DELTAFLOW, "migrate"], env=environment, check=True, capture_output=True)
    return environment


def _keys(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DELTAFLOW, "keys", *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_bootstrap_prints_the_operator_key_once_and_refuses_twice(env: dict[str, str]) -> None:
    first = _keys(env, "bootstrap")
    assert first.returncode == 0, first.stderr
    secret = first.stdout.strip()
    assert secret.startswith("dfk_")
    assert len(secret.splitlines()) == 1, "stdout carries only the key"
    again = _keys(env, "bootstrap")
    assert again.returncode == 1
    assert "operator key already exists" in again.stderr
    quiet = _keys(env, "bootstrap", "--if-missing")
    assert quiet.returncode == 0
    assert quiet.stdout == ""
    forced = _keys(env, "bootstrap", "--force")
    assert forced.returncode == 0
    assert forced.stdout.strip() != secret


def test_bootstrap_names_the_key_id_and_the_tenant_id_each_as_what_it_is(env: dict[str, str]) -> None:
    first = _keys(env, "bootstrap", "--tenant", "acme")
    listed = _keys(env, "list", "--tenant", "acme").stdout
    key_id = listed.split()[0]
    tenant_id = next(word for word in first.stderr.replace(")", " ").split() if word.count("-") == 4 and word != key_id)
    assert f"operator key {key_id} for tenant 'acme' (tenant id {tenant_id})" in first.stderr
    assert tenant_id != key_id


def test_create_without_a_name_labels_the_key_by_its_role(env: dict[str, str]) -> None:
    created = _keys(env, "create", "--tenant", "acme", "--role", "admin")
    assert created.returncode == 0, created.stderr
    assert "admin-key" in _keys(env, "list", "--tenant", "acme").stdout


def test_create_list_rotate_revoke_mirror_the_http_routes(env: dict[str, str]) -> None:
    created = _keys(env, "create", "--tenant", "acme", "--name", "bot", "--role", "reader", "--scope", "market:read")
    assert created.returncode == 0, created.stderr
    key_id = created.stderr.split()[1]
    listed = _keys(env, "list", "--tenant", "acme")
    assert key_id in listed.stdout
    assert "reader" in listed.stdout
    assert created.stdout.strip() not in listed.stdout, "lists never show the secret"

    rotated = _keys(env, "rotate", key_id, "--grace-seconds", "0")
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.strip().startswith("dfk_")
    revoked = _keys(env, "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in _keys(env, "list", "--tenant", "acme", "--status", "revoked").stdout

    missing = _keys(env, "revoke", "00000000-0000-0000-0000-000000000001")
    assert missing.returncode == 1
    assert "not found" in missing.stderr
