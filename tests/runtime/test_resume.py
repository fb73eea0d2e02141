"""Resume after the driver is killed (SIGKILL): no finished item and no committed block of a
large item is computed again, nothing half-written looks complete, and the outputs equal an
undisturbed run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import geopandas
import nibabel as nib
import numpy as np
import pytest
import rasterio
import shapely
import yaml

from geoseg_pipeline.api import ledger_rows
from geoseg_pipeline.tiling import plan_tiles

pytestmark = pytest.mark.slow

# A model whose labels do not depend on the blending order (every window predicts the same
# function of its input), slowed down so that a run can be killed mid-way.
SLOW_MODEL = textwrap.dedent("""
    import time
    import torch

    class Slow(torch.nn.Module):
        def __init__(self, delay: float = 0.02) -> None:
            super().__init__()
            self.delay = delay

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(self.delay * x.shape[0])
            v = x[:, :1]
            return torch.cat([100 - v, 50 - (v - 150).abs(), v - 200], dim=1)
""")


def _workflow(tmp: Path, inputs: list[Path], out: Path, roi: list[int], block: int, delay: float,
              formats: list[str] | None = None, **resources: object) -> Path:
    (tmp / "slowmodel.py").write_text(SLOW_MODEL)
    wf = {
        "inputs": {"paths": [str(p) for p in inputs]},
        "model": {"type": "python", "import_path": "slowmodel:Slow", "args": {"delay": delay}, "trust_code": True,
                  "in_channels": 1 if len(roi) == 3 else 3},
        "tiling": {"roi_size": roi, "overlap": 0.25, "block_size": block, "batch_size": 2},
        "output": {"directory": str(out), "formats": formats},
        "resources": resources,
    }
    if len(roi) == 3:
        wf["statistics"] = {"lesion_classes": [2]}
    path = tmp / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(wf))
    return path


def _geoseg(tmp: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "RAY_ADDRESS": ""}
    # a session of its own: the kill takes the driver and everything it started (a local Ray)
    return subprocess.Popen([sys.executable, "-m", "geoseg_pipeline.cli", "--no-progress", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            cwd=tmp)


def _kill_when(proc: subprocess.Popen[str], ready: Callable[[], bool], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"the run ended (status {proc.returncode}) before it could be killed:\n{out}")
        assert time.monotonic() < deadline, "the run never got far enough to be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _journal(item_dir: Path) -> set[tuple[int, ...]]:
    found = set()
    for p in item_dir.glob(".blocks-*/b-*.npz"):
        found.add(tuple(int(i) for i in p.stem[2:].split("-")))
    return found


def _run(tmp: Path, wf: Path, *extra: str) -> str:
    proc = _geoseg(tmp, "run", str(wf), *extra)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


def _windows_of_needed_bands(shape: tuple[int, ...], roi: list[int], block: int, done: set[tuple[int, ...]],
                             bands: int) -> int:
    """The windows of the tasks that add to a block not committed before, each run by the band
    of its own block (the tasks of a band's committed blocks, and whole committed bands, do not
    run)."""
    plan = plan_tiles(shape, roi, 0.25, (block,) * len(shape))
    edges = [b.rows for b in plan.bands(bands)]
    band_of = {row: i for i, (lo, hi) in enumerate(edges) for row in range(lo, hi)}
    windows = 0
    for task in plan.tasks():
        own = band_of[task.block[0]]
        if any(ix not in done and band_of[ix[0]] == own for ix in plan.blocks_touched(task)):
            windows += len(task.windows)
    return windows


def test_killed_driver_resumes_a_raster_from_its_committed_blocks(
    tmp_path: Path, write_raster: Callable[..., Path]
) -> None:
    rng = np.random.default_rng(7)
    data = rng.integers(1, 255, (3, 640, 576)).astype("uint8")
    scene = write_raster("scene.tif", data)
    out = tmp_path / "out"
    formats = ["cog", "geoparquet"]  # the polygons, too, are made of resumed and new blocks
    wf = _workflow(tmp_path, [scene], out, [64, 64], 128, 0.03, formats, workers=1)
    total_blocks = 5 * 5

    proc = _geoseg(tmp_path, "run", str(wf))
    _kill_when(proc, lambda: len(_journal(out / "scene")) >= 8)
    committed = _journal(out / "scene")
    assert 8 <= len(committed) < total_blocks
    assert not (out / "scene" / "labels.tif").exists()  # nothing that looks complete
    assert [r.status for r in ledger_rows(out)] == ["running"]

    log = _run(tmp_path, wf)
    assert "resuming" in log
    stats = json.loads((out / "scene" / "stats.json").read_text())
    assert stats["blocks_resumed"] == len(committed)
    # only the bands that hold a block not committed before ran
    assert stats["windows_run"] == _windows_of_needed_bands((640, 576), [64, 64], 128, committed, stats["bands"])
    assert stats["windows_run"] < plan_tiles((640, 576), (64, 64), 0.25, (128, 128)).window_count
    assert not list((out / "scene").glob(".*"))  # journal, staging and scratch all gone
    rows = ledger_rows(out)
    assert [r.status for r in rows] == ["ok"]

    # the same labels and statistics as a run never disturbed
    calm = tmp_path / "calm"
    _run(tmp_path, _workflow(tmp_path, [scene], calm, [64, 64], 128, 0.0, formats, workers=1))
    with rasterio.open(out / "scene" / "labels.tif") as a, rasterio.open(calm / "scene" / "labels.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))
        assert a.profile == b.profile
    calm_stats = json.loads((calm / "scene" / "stats.json").read_text())
    assert stats["classes"] == calm_stats["classes"]
    frames = [geopandas.read_parquet(d / "scene" / "labels.parquet") for d in (out, calm)]
    polygons = [sorted(shapely.normalize(g).wkt for g in frame.geometry) for frame in frames]
    assert polygons[0] == polygons[1] and len(polygons[0]) > 1


def test_killed_driver_resumes_a_volume_with_exact_lesions(tmp_path: Path) -> None:
    shape = (96, 80, 40)
    ii, jj, kk = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    data = np.full(shape, 120, np.float32)
    for ci, cj, ck, r in ((20, 20, 10, 6), (50, 40, 20, 9), (80, 60, 30, 5), (47, 64, 8, 4)):
        data[((ii - ci) ** 2 + (jj - cj) ** 2 + ((kk - ck) * 2) ** 2) < r * r] = 260  # lesions across blocks
    data[:10] = 0
    affine = np.diag([0.8, 0.9, 2.0, 1.0])
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    out = tmp_path / "out"
    wf = _workflow(tmp_path, [path], out, [32, 32, 16], 32, 0.08, workers=1)

    proc = _geoseg(tmp_path, "run", str(wf))
    _kill_when(proc, lambda: len(_journal(out / "vol")) >= 4)
    committed = _journal(out / "vol")
    assert not (out / "vol" / "labels.nii.gz").exists()

    log = _run(tmp_path, wf)
    assert "resuming" in log
    stats = json.loads((out / "vol" / "stats.json").read_text())
    assert stats["blocks_resumed"] == len(committed) >= 4
    assert stats["windows_run"] == _windows_of_needed_bands(shape, [32, 32, 16], 32, committed, stats["bands"])

    calm = tmp_path / "calm"
    _run(tmp_path, _workflow(tmp_path, [path], calm, [32, 32, 16], 32, 0.0, workers=1))
    a = np.asarray(nib.load(out / "vol" / "labels.nii.gz").dataobj)
    b = np.asarray(nib.load(calm / "vol" / "labels.nii.gz").dataobj)
    assert np.array_equal(a, b)
    calm_stats = json.loads((calm / "vol" / "stats.json").read_text())
    assert stats["lesions"] == calm_stats["lesions"] and len(stats["lesions"]) == 4
    assert stats["classes"] == calm_stats["classes"]


def test_killed_driver_redoes_no_finished_item(tmp_path: Path, write_raster: Callable[..., Path]) -> None:
    """Several items on a local Ray: the items finished before the kill are skipped."""
    rng = np.random.default_rng(1)
    scenes = [write_raster(f"s{i}.tif", rng.integers(1, 255, (3, 200, 200)).astype("uint8")) for i in range(5)]
    out = tmp_path / "out"
    wf = _workflow(tmp_path, scenes, out, [64, 64], 256, 0.1, workers=2, backend="ray")

    def two_done() -> bool:
        return (out / "ledger.sqlite").exists() and sum(r.status == "ok" for r in ledger_rows(out)) >= 2

    proc = _geoseg(tmp_path, "run", str(wf))
    _kill_when(proc, two_done)
    done_before = {r.item for r in ledger_rows(out) if r.status == "ok"}
    assert len(done_before) >= 2

    _run(tmp_path, wf)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items_skipped"] == len(done_before)
    assert summary["items_ok"] == 5 - len(done_before)
    rows = {r.item: r for r in ledger_rows(out)}
    assert all(r.status == "ok" for r in rows.values())
    assert {i for i, r in rows.items() if r.run_id != summary["run_id"]} == done_before
