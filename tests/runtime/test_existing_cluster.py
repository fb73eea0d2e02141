"""``geoseg predict --address`` against a real ``ray start --head`` cluster (token auth on)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def ray_head(tmp_path: Path) -> Iterator[str]:
    """A real head node; stopped through its own process group (``ray stop`` would also stop
    every other Ray on the machine)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    log = (tmp_path / "head.log").open("w")
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            probe = subprocess.run([str(BIN / "ray"), "status", f"--address={address}"], capture_output=True,
                                   env={**env, "RAY_AUTH_MODE": "token"}, timeout=60)
            if probe.returncode == 0:
                break
            assert head.poll() is None, (tmp_path / "head.log").read_text()
            time.sleep(1)
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        log.close()


@pytest.mark.slow
def test_predict_on_an_existing_cluster(
    tmp_path: Path, ray_head: str, write_raster: Callable[..., Path], conv_model: Callable[..., Path]
) -> None:
    scene = write_raster("scene.tif", np.random.default_rng(0).integers(1, 200, (3, 90, 120)).astype("uint8"))
    model = conv_model(in_channels=3, classes=3)
    run = subprocess.run(
        [str(BIN / "geoseg"), "--no-progress", "predict", str(scene), "--model", str(model),
         "--out", str(tmp_path / "out"), "--roi-size", "64", "--workers", "2", "--address", ray_head],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    with rasterio.open(tmp_path / "out/scene/labels.tif") as ds:
        assert ds.shape == (90, 120)
