"""The local backend: tile tasks on threads of the job's process, chosen for one-item jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geoseg_pipeline.api import run_workflow
from geoseg_pipeline.errors import JobError
from geoseg_pipeline.runtime.pool import choose_backend
from geoseg_pipeline.spec import ResourceSpec, parse_workflow


@pytest.mark.parametrize(
    ("resources", "address", "items", "connected", "expected"),
    [
        ({}, None, 1, False, "local"),  # one item on this machine: no Ray start-up
        ({}, None, 2, False, "ray"),  # a cohort: actors
        ({}, "auto", 1, False, "ray"),  # a cluster
        ({}, None, 1, True, "ray"),  # the caller connected Ray on purpose
        ({"gpus_per_worker": 1, "workers": 2}, None, 1, False, "ray"),  # one actor per GPU
        ({"gpus_per_worker": 1}, None, 1, False, "local"),
        ({"backend": "ray"}, None, 1, False, "ray"),
        ({"backend": "local"}, None, 5, True, "local"),
    ],
)
def test_choose_backend(resources: dict[str, object], address: str | None, items: int, connected: bool,
                        expected: str) -> None:
    assert choose_backend(ResourceSpec.model_validate(resources), address, items, connected) == expected


def test_local_backend_refuses_a_cluster_address() -> None:
    with pytest.raises(JobError, match="backend is local"):
        choose_backend(ResourceSpec(backend="local"), "10.0.0.1:6379", 1, False)


def _wf(tmp: Path, inputs: list[Path], model: Path, out: str, **resources: object) -> dict[str, object]:
    return {
        "inputs": {"paths": [str(p) for p in inputs]},
        "model": {"type": "torchscript", "path": str(model)},
        "tiling": {"roi_size": 32, "overlap": 0.5, "block_size": 64, "batch_size": 3},
        "output": {"directory": str(tmp / out), "formats": ["cog", "logits"]},
        "resources": resources,
    }


def test_threads_share_one_model_and_match_one_thread(
    tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path]
) -> None:
    """Four threads, two items: the same logits as one thread, the caller's torch threads kept."""
    rng = np.random.default_rng(3)
    scenes = [write_raster(f"s{i}.tif", rng.integers(1, 255, (3, 150, 170)).astype("uint8")) for i in range(2)]
    model = conv_model()
    before = torch.get_num_threads()
    one = run_workflow(parse_workflow(_wf(tmp_path, scenes, model, "one", backend="local", workers=1), tmp_path),
                       progress=False)
    four = run_workflow(parse_workflow(_wf(tmp_path, scenes, model, "four", backend="local", workers=4,
                                           max_tasks_in_flight=3), tmp_path), progress=False)
    assert one.ok and four.ok, (one.outcomes, four.outcomes)
    assert torch.get_num_threads() == before
    summary = json.loads((tmp_path / "four" / "summary.json").read_text())
    assert summary["backend"] == "local" and summary["actors"] == 4
    assert summary["actor_nodes"] == ["local"] * 4
    for s in ("s0", "s1"):
        # task sums arrive in a different order: float32 rounding (1e-7 relative), not content
        with rasterio.open(tmp_path / "one" / s / "logits.tif") as a, \
                rasterio.open(tmp_path / "four" / s / "logits.tif") as b:
            np.testing.assert_allclose(a.read(), b.read(), rtol=1e-6, atol=1e-5)
        with rasterio.open(tmp_path / "one" / s / "labels.tif") as a, \
                rasterio.open(tmp_path / "four" / s / "labels.tif") as b:
            assert np.array_equal(a.read(), b.read())


def test_local_model_load_error_fails_the_item_with_the_loaders_message(
    tmp_path: Path, write_raster: Callable[..., Path]
) -> None:
    src = write_raster("scene.tif", np.ones((3, 40, 40), "uint8"))
    bogus = tmp_path / "bogus.pt"
    bogus.write_text("not a model")
    spec = parse_workflow(_wf(tmp_path, [src], bogus, "out", backend="local"), tmp_path)
    result = run_workflow(spec, progress=False)
    assert not result.ok
    assert "not a TorchScript model" in result.outcomes[0].error and str(bogus) in result.outcomes[0].error


class _FailsOnBright(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x > 200).any()):
            raise RuntimeError("bright window")
        return torch.cat([x[:, :1], -x[:, :1]], dim=1)


def test_a_failing_task_fails_its_item_only(tmp_path: Path, write_raster: Callable[..., Path]) -> None:
    """An error raised by torch in a worker thread fails that item, with torch's message."""
    model = tmp_path / "fails.pt"
    torch.jit.script(_FailsOnBright()).save(str(model))
    dark = write_raster("dark.tif", np.full((1, 64, 64), 10, "uint8"))
    bright = write_raster("bright.tif", np.full((1, 64, 64), 250, "uint8"))
    result = run_workflow(parse_workflow(_wf(tmp_path, [dark, bright], model, "out", backend="local", workers=2),
                                         tmp_path), progress=False)
    by_name = {o.item: o for o in result.outcomes}
    assert by_name["dark"].status == "ok"
    assert by_name["bright"].status == "failed" and "bright window" in by_name["bright"].error
    assert not (tmp_path / "out" / "bright" / "labels.tif").exists()


@pytest.mark.slow
def test_one_item_cli_job_runs_without_ray(tmp_path: Path, write_raster: Callable[..., Path],
                                           conv_model: Callable[..., Path]) -> None:
    """``geoseg predict`` on one scene picks the local backend by itself (no Ray is started)."""
    src = write_raster("scene.tif", np.random.default_rng(0).integers(1, 255, (3, 96, 96)).astype("uint8"))
    model = conv_model()
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.run([sys.executable, "-m", "geoseg_pipeline.cli", "--no-progress", "predict", str(src),
                           "--model", str(model), "--out", str(tmp_path / "out"), "--roi-size", "32"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "thread(s) in this process" in proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["backend"] == "local" and summary["items_ok"] == 1
