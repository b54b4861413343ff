"""Deployment files, validated as far as this machine allows (no Docker engine here)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import app.auth.concurrency  # noqa: F401 - registers the concurrency-limited problem
from app.core.errors import PROBLEM_TYPES

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def _yaml(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def test_compose_services_and_their_references() -> None:
    compose = _yaml(ROOT / "docker-compose.yml")
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "api", "nginx"} <= set(services)
    build = services["migrate"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    for volume in services["nginx"]["volumes"]:
        source = volume.split(":", 1)[0]
        assert (ROOT / source).is_file(), f"nginx mounts a missing file: {source}"
    assert services["api"]["environment"]["DELTAFLOW_ENVIRONMENT"] == "production"
    # Bar closes' alert evaluation runs in its own service, outside nginx; the API instances leave it to it.
    assert services["api"]["environment"]["DELTAFLOW_ALERTS_EVALUATE"] == "false"
    assert services["alerts"]["environment"]["DELTAFLOW_ALERTS_EVALUATE"] == "true"
    assert (
        services["alerts"]["environment"]["DELTAFLOW_DATABASE_URL"]
        == services["api"]["environment"]["DELTAFLOW_DATABASE_URL"]
    )
    upstream = re.search(r"upstream deltaflow_api \{(.*?)\n    \}", (ROOT / "nginx" / "nginx.conf").read_text(), re.S)
    assert upstream is not None
    assert re.findall(r"^\s*server (\S+)", upstream.group(1), re.M) == ["api:8000"], "nginx sends to the API only"


def _ingests(service: dict[str, Any]) -> bool:
    command = service.get("command") or []
    return command[:2] == ["deltaflow", "ingest"] or ("serve" in command and "--with-ingest" in command)


def test_every_feed_the_api_serves_has_an_ingestor_in_compose() -> None:
    """A compose deployment once started no ingestor at all, so every signal was a 404/503."""
    services = _yaml(ROOT / "docker-compose.yml")["services"]
    feeds = services["api"]["environment"].get("DELTAFLOW_FEEDS")
    assert feeds, "the API must be told which feeds it serves"
    ingestors = {name: spec for name, spec in services.items() if _ingests(spec)}
    assert ingestors, "no service ingests market data"
    for name, spec in ingestors.items():
        assert spec["environment"].get("DELTAFLOW_FEEDS") == feeds, f"{name} ingests other feeds than the API serves"
        assert spec.get("deploy", {}).get("replicas", 1) >= 2, f"{name} has no standby"
        assert spec["healthcheck"]["test"][-2:] == ["deltaflow", "feeds"]
        assert spec["depends_on"]["redis"]["condition"] == "service_healthy"


def test_dockerfile_is_multi_stage_and_non_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("\nFROM ") + dockerfile.startswith("FROM ") >= 2
    assert "\nUSER deltaflow" in dockerfile
    for copied in ("pyproject.toml", "constraints.txt", "app", "alembic.ini", "migrations"):
        assert (ROOT / copied).exists()


def test_ci_workflow_runs_lint_migrations_and_tests() -> None:
    workflow = _yaml(ROOT / ".github" / "workflows" / "ci.yml")
    job = workflow["jobs"]["test"]
    assert {"postgres", "redis"} <= set(job["services"])
    commands = " ".join(step.get("run", "") for step in job["steps"])
    for expected in ("ruff check", "mypy", "alembic upgrade head", "alembic check", "pytest --cov"):
        assert expected in commands


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs it with apt-get)")
def test_nginx_config_is_accepted_by_real_nginx(tmp_path: Path) -> None:
    # `api` only resolves inside compose; everything else is tested exactly as shipped.
    config = (ROOT / "nginx" / "nginx.conf").read_text().replace("server api:8000", "server 127.0.0.1:8000")
    conf_path = tmp_path / "nginx.conf"
    conf_path.write_text(config)
    result = subprocess.run(
        [str(NGINX), "-t", "-p", str(tmp_path), "-c", str(conf_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


def test_nginx_per_key_concurrency_limit_says_its_own_number_in_its_problem() -> None:
    """The limit is a literal in three places (nginx cannot put a variable in `limit_conn`): they must agree, and
    the refusal must be the app's documented problem with status 429."""
    config = (ROOT / "nginx" / "nginx.conf").read_text()
    limits = re.findall(r"limit_conn per_key (\d+);", config)
    assert len(limits) == 1, limits
    problem = re.search(r"return 429 '(\{\"type\":\"/problems/concurrency-limited\".*\})';", config)
    assert problem is not None
    body = json.loads(problem.group(1).replace("$deltaflow_problem_instance", "/").replace("$deltaflow_request_id", ""))
    assert body["status"] == 429
    assert body["limit"] == int(limits[0])
    assert f"More than {limits[0]} requests" in body["detail"]
    assert "error_page 430 =429 @concurrency_limited;" in config
    assert "concurrency-limited" in PROBLEM_TYPES  # the type the app documents at /problems/concurrency-limited
