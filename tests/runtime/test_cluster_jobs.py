"""``geoseg submit`` through the Ray Jobs API to a real two-node cluster (token auth on):
the work runs on both nodes, each tile task once, and the outputs equal a local run."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from ray_nodes import BIN, Cluster

from geoseg_pipeline.tiling import plan_tiles

pytestmark = pytest.mark.slow


@pytest.fixture()
def two_nodes(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A head (1 CPU, dashboard and Jobs API) and a second node (1 CPU) joining it, token auth on."""
    with Cluster(tmp_path, head_cpus=1, dashboard=True) as cluster:
        cluster.add_worker(cpus=1)
        yield cluster.dashboard, cluster.env


def _submit(tmp: Path, url: str, env: dict[str, str], scenes: list[Path],
            model: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``geoseg submit --wait`` of a workflow over ``scenes`` (2 actors of 1 CPU, roi and block
    64) into ``tmp/cluster-out``; the finished submission and the job's summary.json."""
    wf = {"name": "cluster-test", "inputs": {"paths": [str(s) for s in scenes]},
          "model": {"type": "torchscript", "path": str(model)},
          "tiling": {"roi_size": 64, "overlap": 0.25, "block_size": 64},
          "output": {"directory": str(tmp / "cluster-out")},
          "resources": {"workers": 2, "cpus_per_worker": 1}}
    wf_path = tmp / "wf.yaml"
    wf_path.write_text(yaml.safe_dump(wf))
    sub = subprocess.run([str(BIN / "geoseg"), "submit", str(wf_path), "--address", url, "--wait"],
                         capture_output=True, text=True, env=env, timeout=900)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    return sub, json.loads((tmp / "cluster-out" / "summary.json").read_text())


def test_submit_runs_on_both_nodes_and_equals_a_local_run(
    tmp_path: Path, two_nodes: tuple[str, dict[str, str]], write_raster: Callable[..., Path],
    conv_model: Callable[..., Path],
) -> None:
    url, env = two_nodes
    scene = write_raster("scene.tif", np.random.default_rng(0).integers(1, 255, (3, 300, 260)).astype("uint8"))
    model = conv_model(in_channels=3, classes=3)
    sub, job = _submit(tmp_path, url, env, [scene], model)
    assert "SUCCEEDED" in sub.stdout and "1 item(s) done, 0 failed" in sub.stdout
    assert len(set(job["actor_nodes"])) == 2  # one actor on each node
    assert all(n > 0 for n in job["tasks_per_actor"])  # both did work ...
    assert job["windows_run"] == plan_tiles((300, 260), (64, 64), 0.25, (64, 64)).window_count  # none twice

    job_id = sub.stdout.split()[1]
    listed = subprocess.run([str(BIN / "geoseg"), "jobs", "--address", url], capture_output=True, text=True,
                            env=env, timeout=120)
    assert listed.returncode == 0 and job_id in listed.stdout and "SUCCEEDED" in listed.stdout
    logs = subprocess.run([str(BIN / "geoseg"), "logs", job_id, "--address", url], capture_output=True, text=True,
                          env=env, timeout=120)
    assert "item 1/1 scene: ok" in logs.stdout or "1 item(s) done" in logs.stdout

    local = subprocess.run([str(BIN / "geoseg"), "--no-progress", "predict", str(scene), "--model", str(model),
                            "--out", str(tmp_path / "local-out"), "--roi-size", "64", "--block-size", "64",
                            "--workers", "2"], capture_output=True, text=True, env=env, timeout=300)
    assert local.returncode == 0, local.stderr
    with rasterio.open(tmp_path / "cluster-out/scene/labels.tif") as a, \
            rasterio.open(tmp_path / "local-out/scene/labels.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))


def test_submit_without_the_token_is_refused(tmp_path: Path, two_nodes: tuple[str, dict[str, str]]) -> None:
    url, env = two_nodes
    wf = {"inputs": {"paths": ["x.tif"]}, "model": {"type": "builtin", "name": "landcover-demo"},
          "output": {"directory": str(tmp_path / "o")}}
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(wf))
    bad = {**env, "RAY_AUTH_TOKEN": "not-the-token"}
    sub = subprocess.run([str(BIN / "geoseg"), "submit", str(tmp_path / "wf.yaml"), "--address", url],
                         capture_output=True, text=True, env=bad, timeout=300)
    assert sub.returncode != 0
    assert "geoseg:" in sub.stderr  # a clear one-line error, not a traceback


#: Scenes of different sizes: several blocks, one block, smaller than the roi, a lone edge column.
SHAPES = ((300, 260), (190, 130), (64, 64), (40, 50), (129, 257), (100, 75))


def test_many_items_on_two_nodes_run_each_tile_task_once(
    tmp_path: Path, two_nodes: tuple[str, dict[str, str]], write_raster: Callable[..., Path],
    conv_model: Callable[..., Path],
) -> None:
    url, env = two_nodes
    rng = np.random.default_rng(1)
    scenes = [write_raster(f"s{i}.tif", rng.integers(1, 255, (3, *shape)).astype("uint8"))
              for i, shape in enumerate(SHAPES)]
    model = conv_model(in_channels=3, classes=3)
    sub, job = _submit(tmp_path, url, env, scenes, model)
    assert f"{len(SHAPES)} item(s) done, 0 failed" in sub.stdout, sub.stdout
    assert job["items_ok"] == len(SHAPES) and job["backend"] == "ray"
    assert len(set(job["actor_nodes"])) == 2  # one actor on each node ...
    assert len(job["tasks_per_actor"]) == 2 and all(n > 0 for n in job["tasks_per_actor"])  # ... both did work
    windows = sum(plan_tiles(shape, (64, 64), 0.25, (64, 64)).window_count for shape in SHAPES)
    assert job["windows_run"] == windows  # no window ran twice as its band's own (nor was left out)
    assert sum(job["tasks_per_actor"]) >= len(SHAPES)  # bands: at least one per item

    local = subprocess.run([str(BIN / "geoseg"), "--no-progress", "predict", *map(str, scenes), "--model", str(model),
                            "--out", str(tmp_path / "local-out"), "--roi-size", "64", "--block-size", "64",
                            "--workers", "2"], capture_output=True, text=True, env=env, timeout=600)
    assert local.returncode == 0, local.stderr
    for i, shape in enumerate(SHAPES):
        with rasterio.open(tmp_path / f"cluster-out/s{i}/labels.tif") as a, \
                rasterio.open(tmp_path / f"local-out/s{i}/labels.tif") as b:
            cluster_labels, local_labels = a.read(1), b.read(1)
        assert cluster_labels.shape == shape
        assert np.array_equal(cluster_labels, local_labels), f"s{i}"
