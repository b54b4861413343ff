"""Which pods take traffic, in the rendered overlays (`test_k8s.py` renders them): the NetworkPolicies (every
Deltaflow pod isolated both ways, then exactly the flows the app needs) and the alert evaluators kept apart from the
API pods."""

from __future__ import annotations

import pytest

from app.cli import build_parser
from tests.deploy.test_k8s import OVERLAYS, find, only_container, pod_labels, render


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_admit_only_the_ingress_controller_and_prometheus(overlay: str) -> None:
    objects = render(overlay)
    policies = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "NetworkPolicy"}
    deny = policies["deltaflow-default-deny"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny
    assert "egress" not in deny
    for _, labels in ((d, pod_labels(objects, d)) for d in ("deltaflow-api", "deltaflow-ingest", "deltaflow-alerts")):
        assert deny["podSelector"]["matchLabels"].items() <= labels.items()

    api = policies["deltaflow-api"]
    assert api["podSelector"]["matchLabels"].items() <= pod_labels(objects, "deltaflow-api").items()
    sources = {
        rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]: [p["port"] for p in rule["ports"]]
        for rule in api["ingress"]
    }
    assert sources == {"ingress-nginx": ["http"], "prometheus": ["metrics"]}
    _, container = only_container(objects, "Deployment", "deltaflow-api")
    assert {"http", "metrics"} <= {p["name"] for p in container["ports"]}

    def egress_ports(policy: str) -> set[int]:
        return {port["port"] for rule in policies[policy].get("egress", []) for port in rule["ports"]}

    dns = policies["deltaflow-dns"]
    assert {p["port"] for p in dns["egress"][0]["ports"]} == {53}
    assert egress_ports("deltaflow-api") >= {5432, 6379, 443}
    assert egress_ports("deltaflow-ingest") >= {6379, 443, 9443}
    assert 5432 not in egress_ports("deltaflow-ingest"), "the ingestors never touch the database"
    assert egress_ports("deltaflow-alerts") >= {5432, 6379, 443}
    alerts = policies["deltaflow-alerts"]
    assert alerts["podSelector"]["matchLabels"].items() <= pod_labels(objects, "deltaflow-alerts").items()
    (only,) = alerts["ingress"]  # Prometheus only: nothing routes requests to the evaluators
    assert only["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "prometheus"
    assert [p["port"] for p in only["ports"]] == ["metrics"]
    assert egress_ports("deltaflow-migrate") == {5432}
    assert "ingress" not in policies["deltaflow-migrate"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_alert_rules_are_evaluated_in_pods_of_their_own(overlay: str) -> None:
    """The evaluators run `serve` outside the Service; the API pods leave evaluation to them (a bar close's burst of
    evaluation moved the API's p99 when it shared their CPU: bench/bench_alerts_scale.py)."""
    objects = render(overlay)
    _, api = only_container(objects, "Deployment", "deltaflow-api")
    _, alerts = only_container(objects, "Deployment", "deltaflow-alerts")
    evaluator = build_parser().parse_args(alerts["command"][1:])
    assert alerts["command"][0] == "deltaflow"
    assert evaluator.command == "serve"
    assert not evaluator.with_ingest
    assert {e["name"]: e["value"] for e in alerts["env"]}["DELTAFLOW_ALERTS_EVALUATE"] == "true"
    assert {e["name"]: e["value"] for e in api["env"]}["DELTAFLOW_ALERTS_EVALUATE"] == "false"
    assert find(objects, "Deployment", "deltaflow-alerts")["spec"]["replicas"] == 2
    selector = find(objects, "Service", "deltaflow-api")["spec"]["selector"]
    assert not selector.items() <= pod_labels(objects, "deltaflow-alerts").items(), "no traffic to the evaluators"
    for kind, path in (("startupProbe", "/startupz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert alerts[kind]["httpGet"] == {"path": path, "port": "http"}
