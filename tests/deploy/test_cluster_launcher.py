"""The Ray cluster launcher config (deploy/vm/cluster.yaml), validated with Ray's own schema
(``ray/autoscaler/ray-schema.json``, as ``ray up`` does) after Ray fills in the provider defaults;
nothing contacts a cloud."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from jsonschema import ValidationError
from ray.autoscaler._private.util import prepare_config, validate_config


def test_validates_against_rays_cluster_schema(cluster_launcher: dict[str, Any]) -> None:
    validate_config(prepare_config(copy.deepcopy(cluster_launcher)))


def test_rays_schema_rejects_a_misspelt_field(cluster_launcher: dict[str, Any]) -> None:
    bad = copy.deepcopy(cluster_launcher)
    bad["available_node_types"]["gpu_worker"]["max_wrokers"] = 4
    with pytest.raises(ValidationError):
        validate_config(prepare_config(bad))


def test_head_cpu_and_gpu_worker_types(cluster_launcher: dict[str, Any]) -> None:
    assert cluster_launcher["provider"]["type"] in {"aws", "gcp", "azure"}
    types = cluster_launcher["available_node_types"]
    head = types[cluster_launcher["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "no actors on the head"
    workers = {name: t for name, t in types.items() if name != cluster_launcher["head_node_type"]}
    gpu = [t for t in workers.values() if t["resources"].get("GPU", 0) >= 1]
    cpu = [t for t in workers.values() if not t["resources"].get("GPU")]
    assert gpu and cpu, "a CPU and a GPU worker type"
    for t in workers.values():
        assert t["min_workers"] == 0 < t["max_workers"], "autoscaling from zero"


def test_setup_installs_torch_first_then_the_package(cluster_launcher: dict[str, Any], dockerfiles: Any) -> None:
    commands = cluster_launcher["setup_commands"]
    args = dockerfiles["Dockerfile"].args
    python = [i for i, c in enumerate(commands) if f"uv python install {args['PYTHON_VERSION']}" in c]
    torch = [i for i, c in enumerate(commands) if f'"{args["TORCH_SPEC"]}"' in c and "pip install" in c]
    package = [i for i, c in enumerate(commands) if "geoseg_pipeline-" in c and "pip install" in c]
    assert python and torch and package, commands
    assert python[0] < torch[0] < package[0], "Python, then torch, then the package"
    install = commands[package[0]]
    assert f'"{args["RAY_SPEC"]}"' in install, "Ray pinned as in the images"
    assert "-c ~/geoseg/torch-constraint.txt" in install, "keep that torch"
    assert cluster_launcher["file_mounts"]["~/geoseg-dist"] == "./dist", "the wheel built by `pip wheel -w dist .`"


def test_token_authentication_on_every_node(cluster_launcher: dict[str, Any]) -> None:
    assert cluster_launcher["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands")
              for c in cluster_launcher[key] if "ray start" in c]
    assert len(starts) == 2
    for command in starts:
        assert re.search(r"RAY_AUTH_MODE=token ray start", command), command
