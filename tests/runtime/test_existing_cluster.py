"""``geoseg predict --address`` against a real ``ray start --head`` cluster (token auth on)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from ray_nodes import BIN, Cluster


@pytest.fixture()
def ray_head(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A real head node (2 CPUs, token auth on with a token of its own): its address and the
    environment that holds the token."""
    with Cluster(tmp_path, head_cpus=2) as cluster:
        yield cluster.address, cluster.env


@pytest.mark.slow
def test_predict_on_an_existing_cluster(
    tmp_path: Path, ray_head: tuple[str, dict[str, str]], write_raster: Callable[..., Path],
    conv_model: Callable[..., Path],
) -> None:
    scene = write_raster("scene.tif", np.random.default_rng(0).integers(1, 200, (3, 90, 120)).astype("uint8"))
    model = conv_model(in_channels=3, classes=3)
    address, env = ray_head
    run = subprocess.run(
        [str(BIN / "geoseg"), "--no-progress", "predict", str(scene), "--model", str(model),
         "--out", str(tmp_path / "out"), "--roi-size", "64", "--workers", "2", "--address", address],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    with rasterio.open(tmp_path / "out/scene/labels.tif") as ds:
        assert ds.shape == (90, 120)
