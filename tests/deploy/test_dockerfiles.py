"""The container images (deploy/docker), checked structurally: no Docker daemon is needed."""

from __future__ import annotations

import re
from importlib.metadata import metadata, requires, version
from typing import Any

import pytest
from packaging.requirements import Requirement

NAMES = ("Dockerfile", "Dockerfile.cuda")


def _pinned(spec: str, package: str) -> str:
    """The exact version a requirement like ``ray[default]==2.60.0`` pins."""
    req = Requirement(spec)
    assert req.name == package, f"{spec!r} does not name {package}"
    pins = [s.version for s in req.specifier if s.operator == "=="]
    assert len(pins) == 1, f"{spec!r} must pin one exact version"
    return pins[0]


def _package_requirement(name: str) -> Requirement:
    """The installed package's requirement on ``name`` (pyproject.toml's dependencies)."""
    for text in requires("geoseg-pipeline") or []:
        req = Requirement(text)
        if req.name == name and req.marker is None:
            return req
    raise AssertionError(f"geoseg-pipeline does not require {name}")


@pytest.mark.parametrize("name", NAMES)
def test_base_image_is_python_311(dockerfiles: Any, name: str) -> None:
    df = dockerfiles[name]
    froms = [rest for k, rest in df.instructions if k == "FROM"]
    assert froms, f"{name}: no FROM"
    python = df.args.get("PYTHON_VERSION", "")
    assert re.fullmatch(r"3\.11\.\d+", python), f"{name}: PYTHON_VERSION must pin a 3.11.x patch, got {python!r}"
    final = froms[-1]
    if name == "Dockerfile":
        assert final.startswith("python:${PYTHON_VERSION}-slim"), final
    else:
        assert final == "${CUDA_IMAGE}", final
        assert df.args["CUDA_IMAGE"].startswith("nvidia/cuda:"), df.args["CUDA_IMAGE"]
        assert 'uv python install "${PYTHON_VERSION}"' in " ".join(r for k, r in df.instructions if k == "RUN")


def test_both_images_share_python_ray_and_torch_versions(dockerfiles: Any) -> None:
    """Ray refuses nodes and drivers whose Ray or Python (to the patch) differ from the cluster's."""
    cpu, cuda = dockerfiles["Dockerfile"].args, dockerfiles["Dockerfile.cuda"].args
    for arg in ("PYTHON_VERSION", "RAY_SPEC", "TORCH_SPEC"):
        assert cpu[arg] == cuda[arg], f"{arg} differs: {cpu[arg]!r} vs {cuda[arg]!r}"


@pytest.mark.parametrize("name", NAMES)
def test_torch_is_pinned_by_a_build_arg_and_installed_first(dockerfiles: Any, makefile_torch_spec: str,
                                                            name: str) -> None:
    df = dockerfiles[name]
    assert df.args["TORCH_SPEC"] == makefile_torch_spec == "torch==2.13.0"
    index = df.args["TORCH_INDEX_URL"]
    expected = r"https://download\.pytorch\.org/whl/cpu" if name == "Dockerfile" else \
        r"https://download\.pytorch\.org/whl/cu\d+"
    assert re.fullmatch(expected, index), f"{name}: TORCH_INDEX_URL {index!r}"
    torch_run = df.index("RUN", "${TORCH_SPEC}")
    package_copy = df.index("COPY", "geoseg_pipeline")
    package_run = df.index("RUN", "/tmp/geoseg-src")
    assert torch_run < package_copy < package_run, f"{name}: torch must be installed before the package"
    install = df.instructions[package_run][1]
    assert "-c /opt/geoseg/torch-constraint.txt" in install, f"{name}: the package install must keep that torch"


@pytest.mark.parametrize("name", NAMES)
def test_ray_matches_the_package_requirement_and_the_tested_version(dockerfiles: Any, name: str) -> None:
    spec = dockerfiles[name].args["RAY_SPEC"]
    pinned = _pinned(spec, "ray")
    assert "default" in Requirement(spec).extras, f"{name}: ray[default] (dashboard, Jobs API) is needed"
    required = _package_requirement("ray")
    assert required.specifier.contains(pinned), f"{name}: ray {pinned} does not satisfy {required}"
    assert pinned == version("ray"), f"{name}: ray {pinned}, but the tests run ray {version('ray')}"


@pytest.mark.parametrize("name", NAMES)
def test_package_is_installed_from_the_checkout(dockerfiles: Any, layout: Any, name: str) -> None:
    df = dockerfiles[name]
    copies = [rest.split() for k, rest in df.instructions if k == "COPY" and not rest.startswith("--from")]
    sources = {s for parts in copies for s in parts[:-1]}
    assert {"pyproject.toml", "README.md", "geoseg_pipeline"} <= sources, sources
    for s in sources:
        assert (layout.repo / s).exists(), f"{name}: COPY {s}: not in the repository"
    extras = set(filter(None, df.args["EXTRAS"].split(",")))
    assert extras <= set(metadata("geoseg-pipeline").get_all("Provides-Extra") or []), extras
    # BuildKit reads <Dockerfile>.dockerignore beside the Dockerfile: everything out but the sources
    ignore = [line.strip() for line in (layout.docker / f"{name}.dockerignore").read_text(encoding="utf-8")
              .splitlines() if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", f"{name}.dockerignore should exclude everything first"
    assert {"!pyproject.toml", "!README.md", "!geoseg_pipeline/"} <= set(ignore), \
        f"{name}.dockerignore must let the COPY sources through"


@pytest.mark.parametrize("name", NAMES)
def test_runs_as_a_non_root_user(dockerfiles: Any, layout: Any, name: str) -> None:
    users = [rest for k, rest in dockerfiles[name].instructions if k == "USER"]
    assert users, f"{name}: no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{name}: USER {users[-1]!r} must be a numeric non-root uid"
    assert int(uid) == layout.image_uid  # the manifests' runAsUser


@pytest.mark.parametrize("name", NAMES)
def test_no_weights_or_data_are_baked_in_or_fetched(dockerfiles: Any, name: str) -> None:
    df = dockerfiles[name]
    assert not [r for k, r in df.instructions if k == "ADD"], f"{name}: use COPY, not ADD"
    for keyword, rest in df.instructions:
        if keyword == "COPY":
            assert not re.search(r"\.(pt|pth|ckpt|onnx|safetensors|tif|nii|zarr)\b", rest), rest
        if keyword == "RUN":
            assert not re.search(r"\b(curl|wget)\s+\S*https?://", rest), f"{name}: downloads in RUN: {rest}"
    # KubeRay's probes call wget: it must be installed (as a package, not used to fetch anything)
    assert "wget" in " ".join(r for k, r in df.instructions if k == "RUN" and "apt-get install" in r)
