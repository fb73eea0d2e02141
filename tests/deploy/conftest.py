"""Fixtures over the deployment files under ``deploy/``: fast, offline, and failing (never
skipping) when a file is missing or broken."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

#: The Kubernetes files and the objects each must hold, as (kind, name).
K8S_FILES: dict[str, list[tuple[str, str]]] = {
    "namespace.yaml": [("Namespace", "geoseg")],
    "storage.yaml": [("PersistentVolumeClaim", "geoseg-archive"), ("PersistentVolumeClaim", "geoseg-models"),
                     ("PersistentVolumeClaim", "geoseg-out")],
    "workflow-configmap.yaml": [("ConfigMap", "geoseg-workflow")],
    "raycluster.yaml": [("RayCluster", "geoseg")],
    "rayjob.yaml": [("RayJob", "geoseg-backfill")],
    "nightly-cronjob.yaml": [("CronJob", "geoseg-nightly")],
}


@dataclass(frozen=True)
class DeployLayout:
    """Where the deployment files are, and the names they share."""

    repo: Path = REPO
    deploy: Path = DEPLOY
    kubernetes: Path = DEPLOY / "kubernetes"
    docker: Path = DEPLOY / "docker"
    cluster_launcher: Path = DEPLOY / "vm" / "cluster.yaml"
    docs: Path = REPO / "docs" / "deploy.md"
    namespace: str = "geoseg"
    token_secret: str = "geoseg-ray-token"
    token_key: str = "auth_token"
    image_uid: int = 1000


@dataclass(frozen=True)
class RayPod:
    """One pod template of a Ray cluster spec: the head or a worker group."""

    where: str
    group: str
    template: dict[str, Any]
    ray_start_params: dict[str, Any]
    group_spec: dict[str, Any]

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.template["spec"]
        return spec

    @property
    def ray_container(self) -> dict[str, Any]:
        """KubeRay's Ray container: the first one."""
        container: dict[str, Any] = self.spec["containers"][0]
        return container

    def mounts(self) -> dict[str, tuple[str, bool]]:
        """mountPath -> (the volume's source, read-only) for the Ray container."""
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        out = {}
        for m in self.ray_container.get("volumeMounts", []):
            vol = volumes[m["name"]]
            if "persistentVolumeClaim" in vol:
                source = "pvc:" + vol["persistentVolumeClaim"]["claimName"]
            elif "configMap" in vol:
                source = "configmap:" + vol["configMap"]["name"]
            else:
                source = "other:" + m["name"]
            out[m["mountPath"]] = (source, bool(m.get("readOnly", False)))
        return out


def read_text(path: Path) -> str:
    """The file's text; a missing file fails the test with its path."""
    if not path.is_file():
        pytest.fail(f"{path.relative_to(REPO)} is missing")
    return path.read_text(encoding="utf-8")


def _yaml_documents(path: Path) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(read_text(path)) if d is not None]
    except yaml.YAMLError as exc:
        pytest.fail(f"{path.relative_to(REPO)} is not valid YAML: {exc}")
    for d in docs:
        assert isinstance(d, dict), f"{path.name}: a document is not a mapping"
    return docs


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments and blank lines dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in read_text(path).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full, pending = pending + line, ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, f"{path.name}: ends inside a continued line"
    return instructions


@dataclass(frozen=True)
class Dockerfile:
    """A parsed Dockerfile: its instructions and each ARG's default."""

    name: str
    instructions: list[tuple[str, str]]

    @property
    def args(self) -> dict[str, str]:
        """ARG defaults, quotes removed ('' for an ARG without one); the last one wins."""
        out = {}
        for keyword, rest in self.instructions:
            if keyword == "ARG":
                name, _, default = rest.partition("=")
                out[name.strip()] = default.strip().strip('"').strip("'")
        return out

    def index(self, keyword: str, needle: str) -> int:
        """Position of the first ``keyword`` instruction whose arguments contain ``needle``."""
        for i, (k, rest) in enumerate(self.instructions):
            if k == keyword and needle in rest:
                return i
        pytest.fail(f"{self.name}: no {keyword} containing {needle!r}")


@pytest.fixture(scope="session")
def layout() -> DeployLayout:
    return DeployLayout()


@pytest.fixture(scope="session")
def manifests(layout: DeployLayout) -> dict[tuple[str, str], dict[str, Any]]:
    """Every Kubernetes object of deploy/kubernetes by (kind, name): exactly the expected ones."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for name, expected in K8S_FILES.items():
        docs = _yaml_documents(layout.kubernetes / name)
        keys = [(d.get("kind", "?"), d.get("metadata", {}).get("name", "?")) for d in docs]
        assert keys == expected, f"{name}: holds {keys}, expected {expected}"
        found.update(zip(keys, docs, strict=True))
    return found


@pytest.fixture(scope="session")
def raycluster(manifests: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return manifests[("RayCluster", "geoseg")]


@pytest.fixture(scope="session")
def rayjob(manifests: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return manifests[("RayJob", "geoseg-backfill")]


@pytest.fixture(scope="session")
def cronjob(manifests: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return manifests[("CronJob", "geoseg-nightly")]


@pytest.fixture(scope="session")
def ray_pods(raycluster: dict[str, Any], rayjob: dict[str, Any]) -> list[RayPod]:
    """The head and every worker group of the RayCluster and of the RayJob's own cluster."""
    pods = []
    for where, spec in (("RayCluster", raycluster["spec"]), ("RayJob", rayjob["spec"]["rayClusterSpec"])):
        head = spec["headGroupSpec"]
        pods.append(RayPod(where, "head", head["template"], head["rayStartParams"], head))
        for group in spec.get("workerGroupSpecs", []):
            pods.append(RayPod(where, group["groupName"], group["template"], group["rayStartParams"], group))
    return pods


@pytest.fixture(scope="session")
def dockerfiles(layout: DeployLayout) -> dict[str, Dockerfile]:
    """The CPU and the CUDA Dockerfile."""
    return {name: Dockerfile(name, _dockerfile_instructions(layout.docker / name))
            for name in ("Dockerfile", "Dockerfile.cuda")}


@pytest.fixture(scope="session")
def cluster_launcher(layout: DeployLayout) -> dict[str, Any]:
    """The Ray cluster launcher config (one YAML document)."""
    docs = _yaml_documents(layout.cluster_launcher)
    assert len(docs) == 1, "deploy/vm/cluster.yaml: expected one YAML document"
    return docs[0]


@pytest.fixture(scope="session")
def makefile_torch_spec(layout: DeployLayout) -> str:
    """The Makefile's default TORCH_SPEC (how `make` installs torch)."""
    match = re.search(r"^TORCH_SPEC\s*\?=\s*(.+)$", read_text(layout.repo / "Makefile"), re.MULTILINE)
    assert match, "Makefile: no TORCH_SPEC default"
    return match.group(1).strip()
