"""A model that takes longer to load than ``resources.placement_timeout_s`` still runs: the
timeout bounds placing the actors and starting their processes, not loading the model (a large
checkpoint on a slow disk may take minutes). A ``geoseg run`` of its own, with its own local Ray
(the actors import the test's model module from ``PYTHONPATH``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

pytestmark = pytest.mark.slow

PLACEMENT_TIMEOUT_S = 10
LOAD_S = 16

SLOW_LOADING_MODEL = textwrap.dedent("""
    import time
    import torch

    class SlowLoading(torch.nn.Module):
        def __init__(self, load_s: float) -> None:
            super().__init__()
            time.sleep(load_s)  # as reading a large checkpoint from a slow disk would
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)
""")


def test_a_model_slower_to_load_than_the_placement_timeout_runs(
    tmp_path: Path, write_raster: Callable[..., Path]
) -> None:
    (tmp_path / "slowloading.py").write_text(SLOW_LOADING_MODEL)
    scene = write_raster("scene.tif", np.random.default_rng(0).integers(1, 255, (3, 60, 70)).astype("uint8"))
    wf = {
        "inputs": {"paths": [str(scene)]},
        "model": {"type": "python", "import_path": "slowloading:SlowLoading", "args": {"load_s": LOAD_S},
                  "trust_code": True, "in_channels": 3},
        "tiling": {"roi_size": 32, "block_size": 64},
        "output": {"directory": str(tmp_path / "out")},
        "resources": {"backend": "ray", "workers": 2, "placement_timeout_s": PLACEMENT_TIMEOUT_S},
    }
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(wf))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "RAY_ADDRESS": ""}
    started = time.monotonic()
    command = [sys.executable, "-m", "geoseg_pipeline.cli", "--no-progress", "run", str(tmp_path / "wf.yaml")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started > LOAD_S  # the model did take that long to load
    assert "not placed" not in done.stdout + done.stderr
    with rasterio.open(tmp_path / "out" / "scene" / "labels.tif") as ds:
        assert ds.read(1).max() < 4 and (ds.width, ds.height) == (70, 60)
