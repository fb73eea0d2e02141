"""A crash inside an inference worker (a real SIGSEGV: a model that dereferences a null pointer on
one input, as a broken decoder would): on Ray the crashing item fails with a reason that says so,
after its band ran on other actors a bounded number of times; the other items are done and the
job ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow

CRASHING_MODEL = textwrap.dedent("""
    import ctypes
    import torch

    class Crashy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if bool((x == 77).all()):  # the poisoned scene: crash as a broken decoder would
                ctypes.string_at(0)
            v = x[:, :1]
            return torch.cat([100 - v, v - 100], dim=1)
""")


def test_a_segfault_in_a_worker_fails_that_item_not_the_job(
    tmp_path: Path, write_raster: Callable[..., Path],
) -> None:
    rng = np.random.default_rng(0)
    scenes = [write_raster("a.tif", rng.integers(0, 70, (3, 96, 96)).astype("uint8")),
              write_raster("poison.tif", np.full((3, 96, 96), 77, "uint8")),
              write_raster("c.tif", rng.integers(0, 70, (3, 80, 64)).astype("uint8"))]
    (tmp_path / "crashy.py").write_text(CRASHING_MODEL)
    wf = {"inputs": {"paths": [str(s) for s in scenes]},
          "model": {"type": "python", "import_path": "crashy:Crashy", "trust_code": True, "in_channels": 3},
          "tiling": {"roi_size": 32, "overlap": 0.25, "block_size": 64},
          "output": {"directory": str(tmp_path / "out")},
          "resources": {"workers": 2, "backend": "ray", "max_restarts": 5}}
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(wf))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "RAY_ADDRESS": ""}
    run = subprocess.run([sys.executable, "-m", "geoseg_pipeline.cli", "--no-progress", "run", "wf.yaml"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    summary = tmp_path / "out" / "summary.json"
    assert summary.is_file(), run.stdout + run.stderr  # the job ended and wrote its record
    job = json.loads(summary.read_text(encoding="utf-8"))
    status = {i["item"]: i for i in job["items"]}
    assert status["a"]["status"] == "ok" and status["c"]["status"] == "ok", status
    assert status["poison"]["status"] == "failed"
    error = status["poison"]["error"]
    assert "poison.tif" in error and "died 2 times" in error and "crash" in error, error
    assert run.returncode == 1  # an item failed
    assert not (tmp_path / "out" / "poison" / "labels.tif").exists()
