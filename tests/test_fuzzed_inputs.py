"""Hostile and broken files (issue 16 item 4): a seeded mutator (``tests/fuzz.py``) makes a few
hundred damaged GeoTIFF, NIfTI (plain and gzipped), Zarr and DICOM inputs (truncations, bit flips,
header fields set to hostile values, huge declared sizes). Each kind runs as one job of all its
cases, in a process of its own: the job ends (never killed, never hung), every case is an ok item
or a failed one with a one-line reason naming its file, each within a time bound, and the job's
memory stays that of a small input (a header claiming a huge image is refused before allocation)."""

from __future__ import annotations

import contextlib
import json
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import psutil
import pytest
import torch
import yaml
import zarr
from dicom_files import HuBands, ct_phantom, orthonormal_affine, write_series
from fuzz import dicom_cases, nifti_cases, tiff_cases, tiff_fields, zarr_cases

pytestmark = pytest.mark.slow

#: Bounds: one item, one job, and the job's peak resident memory.
ITEM_S, JOB_S, PEAK_MIB = 60.0, 600.0, 2048.0


def _run(tmp: Path, name: str, inputs: list[Path], model: dict[str, Any], tiling: dict[str, Any],
         extra: dict[str, Any] | None = None) -> tuple[dict[str, Any], float, float, str]:
    """Run a job over ``inputs`` (local backend, one worker) in a child process; its summary, wall
    seconds, peak RSS (MiB) and stderr."""
    wf = {"name": name, "inputs": {"paths": [str(p) for p in inputs], **(extra or {})}, "model": model,
          "tiling": tiling, "output": {"directory": str(tmp / f"out-{name}")},
          "resources": {"workers": 1, "backend": "local"}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(wf))
    started = time.monotonic()
    log = tmp / f"{name}.log"  # a file, not a pipe: a pipe nobody reads fills up and blocks the job
    with log.open("w") as out:
        proc = psutil.Popen([sys.executable, "-m", "geoseg_pipeline.cli", "--no-progress", "run", str(path)],
                            stdout=out, stderr=subprocess.STDOUT)
    peak = 0.0
    try:
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, proc.memory_info().rss / 2**20)
            if time.monotonic() - started > JOB_S:
                proc.kill()
                raise AssertionError(f"{name}: the job ran past {JOB_S:.0f} s")
            time.sleep(0.05)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    wall = time.monotonic() - started
    err = log.read_text(encoding="utf-8", errors="replace")
    assert proc.returncode in (0, 1), f"{name}: the job died (exit {proc.returncode}):\n{err[-4000:]}"
    summary = tmp / f"out-{name}" / "summary.json"
    assert summary.is_file(), err[-4000:]
    return json.loads(summary.read_text(encoding="utf-8")), wall, peak, err


def _hu_model(tmp: Path) -> dict[str, Any]:
    """A 3D model of CT bands (organ, lesion) as a TorchScript file: the workflow's ``model``."""
    path = tmp / "bands.pt"
    torch.jit.script(HuBands()).save(str(path))
    return {"type": "torchscript", "path": str(path)}


def _check(name: str, job: dict[str, Any], cases: list[Path], wall: float, peak: float, err: str) -> None:
    rows = {Path(i["source"]).name: i for i in job["items"]}
    missing = [c.name for c in cases if c.name not in rows and not any(c.name in s for s in rows)]
    assert not missing, f"{name}: cases without a row: {missing[:10]}"
    for case, row in rows.items():
        assert row["status"] in ("ok", "failed"), (case, row)
        assert row["seconds"] < ITEM_S, (case, row["seconds"])
        if row["status"] == "failed":
            error = row["error"] or ""
            assert error and "\n" not in error and len(error) < 2000, (case, error)
            assert case in error or row["item"] in error, (case, error)  # names its file
    assert "Traceback" not in err, err[-4000:]  # clear errors, not crash dumps
    assert peak < PEAK_MIB, f"{name}: peak RSS {peak:.0f} MiB"
    failed = sum(r["status"] == "failed" for r in rows.values())
    print(f"{name}: {len(rows)} cases, {failed} failed, {wall:.1f} s, peak {peak:.0f} MiB")


def test_fuzzed_rasters(tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path]) -> None:
    rng = np.random.default_rng(20261204)
    source = write_raster("source.tif", rng.integers(1, 255, (3, 64, 64)).astype("uint8"))
    store = tmp_path / "source.zarr"
    arr = zarr.create_array(str(store), shape=(3, 64, 64), chunks=(3, 32, 32), dtype="uint8")
    arr[...] = rng.integers(1, 255, (3, 64, 64)).astype("uint8")
    arr.attrs.update({"crs": "EPSG:32633", "transform": [10, 0, 500000, 0, -10, 5200000]})
    cases_dir = tmp_path / "cases"
    cases_dir.mkdir()
    cases = tiff_cases(source, cases_dir, rng, 120) + zarr_cases(store, cases_dir, rng, 40)
    huge = cases_dir / "declares-65535-squared.tif"  # 4.3 G pixels declared by a 13 kB file
    data = bytearray(source.read_bytes())
    for name, at, fmt in tiff_fields(bytes(data)):
        if name in ("ImageWidth[0]", "ImageLength[0]"):
            struct.pack_into("<" + fmt, data, at, 65535)
    huge.write_bytes(bytes(data))
    cases.append(huge)
    model = {"type": "torchscript", "path": str(conv_model(in_channels=3, classes=4))}
    job, wall, peak, err = _run(tmp_path, "rasters", [source, *cases], model, {"roi_size": 32, "block_size": 64},
                                {"max_pixels": 10**8})
    _check("rasters", job, [source, *cases], wall, peak, err)
    rows = {i["item"]: i for i in job["items"]}
    assert rows["source"]["status"] == "ok"  # the unharmed one
    assert rows[huge.stem]["status"] == "failed" and "inputs.max_pixels" in rows[huge.stem]["error"]


def test_fuzzed_volumes(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    hu = ct_phantom((24, 24, 12), 0)
    source = tmp_path / "source.nii"
    nib.save(nib.Nifti1Image(((hu + 1024) / 2).astype(np.int16), orthonormal_affine((1.0, 1.0, 2.0))), source)
    cases_dir = tmp_path / "cases"
    cases_dir.mkdir()
    cases = nifti_cases(source, cases_dir, rng, 160)
    model = _hu_model(tmp_path)
    job, wall, peak, err = _run(tmp_path, "volumes", [source, *cases], model, {"roi_size": [16, 16, 8]})
    _check("volumes", job, [source, *cases], wall, peak, err)
    assert {i["item"]: i["status"] for i in job["items"]}["source"] == "ok"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fuzzed_dicom_series(tmp_path: Path) -> None:
    rng = np.random.default_rng(16)
    series = write_series(tmp_path / "source" / "s", ct_phantom((24, 24, 8), 1), orthonormal_affine((1, 1, 2)),
                          slope=2.0, intercept=-1024.0, modality="CT")
    cases_dir = tmp_path / "cases"
    cases_dir.mkdir()
    cases = dicom_cases(series, cases_dir, rng, 48)
    model = _hu_model(tmp_path)
    job, wall, peak, err = _run(tmp_path, "dicom", [series[0].parent, *cases], model, {"roi_size": [16, 16, 8]},
                                {"format": "dicom"})
    assert len(job["items"]) >= len(cases), f"cases without a row: {len(cases) - len(job['items'])}"
    _check_dicom(job, cases, wall, peak, err)
    assert sum(i["status"] == "ok" for i in job["items"]) >= 1  # the unharmed series at least


def _check_dicom(job: dict[str, Any], cases: list[Path], wall: float, peak: float, err: str) -> None:
    for row in job["items"]:
        assert row["status"] in ("ok", "failed"), row
        assert row["seconds"] < ITEM_S, row
        if row["status"] == "failed":
            error = row["error"] or ""
            assert error and "\n" not in error and len(error) < 2000, error
    assert "Traceback" not in err, err[-4000:]
    assert peak < PEAK_MIB, f"dicom: peak RSS {peak:.0f} MiB"
    print(f"dicom: {len(job['items'])} rows for {len(cases) + 1} series folders, {wall:.1f} s, peak {peak:.0f} MiB")
