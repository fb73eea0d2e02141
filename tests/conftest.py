"""Shared fixtures: a real local Ray for the whole session, tiny rasters and TorchScript models,
and a real S3-compatible server on loopback (moto's server mode) per test module."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With ``--dist loadfile`` (``make test`` runs two pytest-xdist workers): one work unit per
    test file, so module-scoped servers (moto, Orthanc) start once, except that the files that
    start real ``ray start`` clusters (they import :mod:`ray_nodes`) are one unit together, so
    two clusters never compete for the machine's cores while their start-up, placement and
    loss timings are what is tested. (``--dist loadgroup`` cannot do this with pytest 9: the
    node ids it rewrites are read-only there.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    root = Path(str(config.rootpath))
    clusters: dict[str, bool] = {}

    class FilesAndClusters(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if path not in clusters:
                source = root / path
                clusters[path] = source.suffix == ".py" and "ray_nodes" in source.read_text(encoding="utf-8")
            return "ray-clusters" if clusters[path] else path

        def _assign_work_unit(self, node: Any) -> None:
            # the longest unit first, so that it does not run alone at the end
            if "ray-clusters" in self.workqueue:
                self.workqueue.move_to_end("ray-clusters", last=False)
            super()._assign_work_unit(node)

    return FilesAndClusters(config, log)


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One real local Ray instance for all tests that run jobs (jobs reuse a connected Ray)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture()
def write_raster(tmp_path: Path) -> Callable[..., Path]:
    """Write a GeoTIFF from an array ``(bands, rows, cols)``; returns its path."""

    def _write(
        name: str,
        data: np.ndarray,
        *,
        crs: str | None = "EPSG:32633",
        transform: object = None,
        nodata: float | None = None,
        tiled: bool = True,
    ) -> Path:
        path = tmp_path / name
        profile: dict[str, object] = dict(
            driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
            dtype=data.dtype, crs=crs, transform=transform or from_origin(500000, 5200000, 10, 10),
            nodata=nodata,
        )
        if tiled and data.shape[1] >= 16 and data.shape[2] >= 16:
            profile.update(tiled=True, blockxsize=16 * max(1, min(data.shape[2] // 16, 16)),
                           blockysize=16 * max(1, min(data.shape[1] // 16, 16)))
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
        return path

    return _write


@pytest.fixture()
def conv_model(tmp_path: Path) -> Callable[..., Path]:
    """A deterministic random TorchScript conv net ``in_channels -> classes``; returns its path."""

    def _make(in_channels: int = 3, classes: int = 4, seed: int = 0, name: str = "model.pt") -> Path:
        import torch

        torch.manual_seed(seed)
        net = torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, 8, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, classes, 3, padding=1),
        ).eval()
        path = tmp_path / name
        torch.jit.script(net).save(str(path))
        return path

    return _make


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """A function returning a loopback TCP port that nothing listens on."""
    return _free_port


@pytest.fixture(scope="module")
def clean_aws_environment() -> Iterator[None]:
    """No AWS setting of the machine running the tests leaks in; no instance-metadata lookups."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(("AWS_", "GDAL_HTTP")):
                mp.delenv(name)
        mp.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.fixture()
def s3_env(endpoint: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Any:
    """The AWS environment pointed at the loopback S3 server, as a user's would be, and a boto3
    client; the test module's ``BUCKET`` exists."""
    import boto3

    for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    bucket = request.module.BUCKET
    if bucket not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=bucket)
    return client


@pytest.fixture(scope="module")
def endpoint(clean_aws_environment: None) -> Iterator[str]:
    """A moto S3 server on loopback for the module (the dev extra installs moto[s3] and flask:
    a missing one is a failure, not a skip)."""
    import moto.server as moto_server

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
