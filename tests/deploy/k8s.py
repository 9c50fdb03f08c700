"""deploy/k8s/ rendered as an operator renders it (`kubectl kustomize`), and lookups over the result."""

from __future__ import annotations

import base64
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO
from trimtab.config import TrimtabConfig, load_config

K8S = REPO / "deploy/k8s"
OVERLAYS = ("dev-cpu", "prod-gpu")
WORKLOADS = ("Deployment", "StatefulSet", "Job")
Doc = dict[str, Any]


def render(overlay: str) -> list[Doc]:
    done = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@dataclass(frozen=True)
class Manifests:
    """One overlay's rendered resources."""

    overlay: str
    docs: list[Doc]

    def of(self, kind: str) -> list[Doc]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def get(self, kind: str, name: str) -> Doc:
        found = [doc for doc in self.of(kind) if doc["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def named(self, kind: str, prefix: str) -> Doc:
        """A generated ConfigMap or Secret, whose name kustomize suffixes with a hash of its content."""
        found = [doc for doc in self.of(kind) if doc["metadata"]["name"].startswith(prefix + "-")]
        assert len(found) == 1, f"{self.overlay}: expected one {kind} {prefix}-<hash>, found {len(found)}"
        return found[0]

    def workloads(self) -> Iterator[Doc]:
        return (doc for doc in self.docs if doc["kind"] in WORKLOADS)

    def container(self, kind: str, name: str) -> Doc:
        (container,) = pod_spec(self.get(kind, name))["containers"]
        return container

    def config(self, container: Doc) -> TrimtabConfig:
        """The trimtab config `container` runs with: the ConfigMap's trimtab.yaml under its TRIMTAB_ variables
        and (where the overlay generates it) the Secret's."""
        text = self.named("ConfigMap", "trimtab-config")["data"]["trimtab.yaml"]
        environ = {env["name"]: env["value"] for env in container.get("env", []) if "value" in env}
        for source in container.get("envFrom", []):
            secrets = [s for s in self.of("Secret") if s["metadata"]["name"] == source["secretRef"]["name"]]
            for secret in secrets:
                environ |= {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "trimtab.yaml"
            path.write_text(text)
            return load_config(path=path, environ={k: v for k, v in environ.items() if k.startswith("TRIMTAB_")})


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Doc) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def env_value(container: Doc, name: str) -> str | None:
    return next((env["value"] for env in container.get("env", []) if env["name"] == name), None)


def port_numbers(container: Doc) -> dict[str, int]:
    return {port.get("name", str(port["containerPort"])): port["containerPort"] for port in container["ports"]}
