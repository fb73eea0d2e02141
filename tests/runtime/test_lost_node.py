"""A node lost mid-job on a real two-node Ray cluster (``ray start``, token auth on): its raylet
and workers are killed with SIGKILL. The job finishes on the actors that are left, with outputs
equal to an undisturbed run and each window counted once; with every worker node gone it fails
cleanly after ``placement_timeout_s``, keeping what it finished, and the next run resumes."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import rasterio
import yaml
from heavy import heavy_model
from ray_nodes import BIN, Cluster, node_processes

from geoseg_pipeline.tiling import plan_tiles

pytestmark = pytest.mark.slow

SHAPE = (384, 384)
ROI, OVERLAP, BLOCK = 64, 0.5, 128
#: How long the job waits for a lost node's actors to be served again: long enough for actors to
#: start on a machine busy with other tests (starting one loads torch and the model), short enough
#: that the test's whole-job bound below means something.
PLACEMENT_TIMEOUT_S = 20


def _scenes(write_raster: Callable[..., Path], n: int) -> list[Path]:
    rng = np.random.default_rng(7)
    return [write_raster(f"s{i}.tif", rng.integers(1, 255, (3, *SHAPE)).astype("uint8")) for i in range(n)]


def _workflow(tmp: Path, scenes: list[Path], model: Path, out: Path, **resources: Any) -> Path:
    wf = {"name": "lost-node", "inputs": {"paths": [str(s) for s in scenes]},
          "model": {"type": "torchscript", "path": str(model)},
          "tiling": {"roi_size": ROI, "overlap": OVERLAP, "block_size": BLOCK},
          "output": {"directory": str(out)},
          "resources": {"workers": 2, "cpus_per_worker": 1, **resources}}
    path = tmp / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(wf))
    return path


def _actor_busy(node: subprocess.Popen[bytes]) -> bool:
    """Whether an inference actor of ``node`` has loaded its model and worked a while."""
    for p in node_processes(node):
        try:
            if " ".join(p.cmdline()).startswith("ray::InferenceActor") and p.cpu_times().user > 2.0:
                return True
        except psutil.Error:
            continue
    return False


def _published(out: Path) -> bool:
    """Whether the job has published an item."""
    return any(out.glob("*/labels.tif"))


def _journaled(out: Path) -> bool:
    """Whether the job has journaled blocks of an item it has not published yet."""
    return any(not (d.parent / "labels.tif").exists() and any(d.glob("b-*")) for d in out.glob("*/.blocks-*"))


def _kill_when(cluster: Cluster, node: subprocess.Popen[bytes], ready: Callable[[], bool],
               killed: list[float]) -> threading.Thread:
    """Kill ``node`` once ``ready()`` and an actor of the node works."""
    def watch() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if ready() and _actor_busy(node):
                cluster.kill(node)
                killed.append(time.monotonic())
                return
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _run(wf: Path, address: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    run = subprocess.run([str(BIN / "geoseg"), "--no-progress", "run", str(wf), "--address", address],
                         capture_output=True, text=True, env=env, timeout=600)
    summary = Path(yaml.safe_load(wf.read_text())["output"]["directory"]) / "summary.json"
    assert summary.is_file(), run.stdout + run.stderr
    return run, json.loads(summary.read_text(encoding="utf-8"))


def _run_calm(tmp: Path, scenes: list[Path], model: Path) -> None:
    """The same job undisturbed, on local threads, into ``tmp/calm``."""
    calm = subprocess.run([str(BIN / "geoseg"), "--no-progress", "run",
                           str(_workflow(tmp, scenes, model, tmp / "calm", backend="local"))],
                          capture_output=True, text=True, timeout=600)
    assert calm.returncode == 0, calm.stderr


def _same_labels(a_dir: Path, b_dir: Path, names: list[str]) -> None:
    for name in names:
        with rasterio.open(a_dir / name / "labels.tif") as a, rasterio.open(b_dir / name / "labels.tif") as b:
            assert np.array_equal(a.read(1), b.read(1)), name


def test_a_lost_worker_node_costs_no_item(
    tmp_path: Path, write_raster: Callable[..., Path],
) -> None:
    scenes = _scenes(write_raster, 6)
    model = heavy_model(tmp_path / "heavy.pt")
    with Cluster(tmp_path, head_cpus=1) as cluster:
        worker = cluster.add_worker(cpus=1)
        killed: list[float] = []
        watcher = _kill_when(cluster, worker, lambda: _published(tmp_path / "disturbed"), killed)
        run, job = _run(_workflow(tmp_path, scenes, model, tmp_path / "disturbed"), cluster.address, cluster.env)
        watcher.join()
    assert killed, "the worker node's actor never got busy"
    assert run.returncode == 0, run.stdout + run.stderr
    assert job["items_ok"] == 6 and job["items_failed"] == 0, job["items"]
    assert len(set(job["actor_nodes"])) == 2  # the job did start on both nodes
    assert job["bands_rerun"] >= 1 and job["actors_lost"] == 1  # no room to restart it: it stayed lost
    assert "is lost" in run.stderr
    # each window counted once: the lost actor's windows were taken back out of the counts
    assert job["windows_run"] == 6 * plan_tiles(SHAPE, (ROI, ROI), OVERLAP, (BLOCK, BLOCK)).window_count

    _run_calm(tmp_path, scenes, model)
    _same_labels(tmp_path / "disturbed", tmp_path / "calm", [s.stem for s in scenes])
    summaries = {}
    for run_dir in ("disturbed", "calm"):
        rows = (tmp_path / run_dir / "summary.csv").read_text(encoding="utf-8").splitlines()
        summaries[run_dir] = sorted(",".join(r.split(",")[:6]) for r in rows)  # item, status, class, pixels...
    assert summaries["disturbed"] == summaries["calm"]  # the class statistics: no block counted twice


def test_every_worker_node_lost_fails_cleanly_and_the_next_run_resumes(
    tmp_path: Path, write_raster: Callable[..., Path],
) -> None:
    scenes = _scenes(write_raster, 4)
    model = heavy_model(tmp_path / "heavy.pt")
    wf = _workflow(tmp_path, scenes, model, tmp_path / "out", placement_timeout_s=PLACEMENT_TIMEOUT_S)
    # the head holds no actor (0 CPUs): losing the one worker node loses every actor
    with Cluster(tmp_path, head_cpus=0) as cluster:
        worker = cluster.add_worker(cpus=2)
        killed: list[float] = []
        watcher = _kill_when(cluster, worker, lambda: _journaled(tmp_path / "out"), killed)
        first, job = _run(wf, cluster.address, cluster.env)
        ended = time.monotonic()
        watcher.join()
        assert killed, "the worker node's actors never got busy"
        assert ended - killed[0] < PLACEMENT_TIMEOUT_S + 60  # the timeout, and the job's end: never a hang
        assert first.returncode != 0
        failed = [i for i in job["items"] if i["status"] == "failed"]
        assert failed and job["items_ok"] + len(failed) == 4
        assert all("no inference actor left" in i["error"] and "placement_timeout_s" in i["error"] for i in failed)
        assert job["actors_lost"] == 2
        journals = [p for p in (tmp_path / "out").glob("*/.blocks-*") if any(p.iterdir())]
        assert journals, "the blocks finished before the loss were not kept"

        cluster.add_worker(cpus=2)  # a node joins again: the next run computes only what is missing
        second, job2 = _run(wf, cluster.address, cluster.env)
    assert second.returncode == 0, second.stdout + second.stderr
    by_item = {i["item"]: i for i in job2["items"]}
    assert job2["items_failed"] == 0 and job2["items_skipped"] == job["items_ok"]
    assert all(by_item[i["item"]]["status"] == "skipped" for i in job["items"] if i["status"] == "ok")
    assert sum(by_item[i["item"]].get("blocks_resumed", 0) for i in failed) > 0  # journaled blocks reused

    _run_calm(tmp_path, scenes, model)
    _same_labels(tmp_path / "out", tmp_path / "calm", [s.stem for s in scenes])
