"""The monitoring files in deploy/: alert rules valid and unit-tested by promtool, the dashboard well formed, and
the public nginx never reaching the metrics listener. (That every metric they name is exported by a running app is
tests/e2e/test_metrics_serve.py's job.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy/prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (.ci/run installs the Debian package `prometheus`)"
)


@needs_promtool
def test_alert_rules_pass_promtool_check() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(PROMETHEUS / "alerts.yml")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_alerts_fire_as_their_unit_tests_expect() -> None:
    """Feed stale, 5xx ratio and readiness flapping against synthetic series (deploy/prometheus/alerts_test.yml)."""
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_severity_and_a_summary() -> None:
    rules = [
        rule for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"] for rule in group["rules"]
    ]
    names = {rule["alert"] for rule in rules}
    assert {"DeltaflowFeedStale", "DeltaflowHigh5xxRatio", "DeltaflowReadinessFlapping"} <= names
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_dashboard_panels_query_prometheus_through_the_datasource_variable() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/deltaflow.json").read_text())
    assert dashboard["uid"] == "deltaflow-overview"
    assert dashboard["title"] == "Deltaflow"
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"datasource", "job"} <= variables
    queries = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert len(queries) >= 20
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in queries:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert re.search(r"\bdeltaflow_\w+", target["expr"]), (panel["title"], target["expr"])


def test_public_nginx_proxies_only_the_api_port() -> None:
    """The metrics listener is a port of its own; nginx forwards to the API port alone, so no path through the
    public entry point can reach it (and the API port has no /metrics route: tests/e2e/test_metrics_serve.py)."""
    config = (ROOT / "nginx/nginx.conf").read_text()
    api_port = Settings.model_fields["port"].default
    upstream_ports = {int(port) for port in re.findall(r"^\s*server\s+[\w.-]+:(\d+)", config, flags=re.MULTILINE)}
    assert upstream_ports == {api_port}
    targets = set(re.findall(r"proxy_pass\s+([^;]+);", config))
    assert targets == {"http://deltaflow_api"}
    assert "metrics" not in config
