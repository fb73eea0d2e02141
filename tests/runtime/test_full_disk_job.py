"""A whole job on an output file system that fills up (a real tmpfs, mounted in a user and mount
namespace of the test's own, so no privilege is needed): the item that does not fit fails with
"no space left on device" naming its folder, nothing of it looks complete, the items that fit are
done, the ledger records each, and a re-run after space is freed computes only the missing one."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
#: The output file system: room for the small items, not for the large one's outputs and journal.
DISK_MIB = 3


def _job(tmp: Path, scenes: list[Path], model: Path, disk: Path) -> Path:
    wf = {"name": "full-disk", "inputs": {"paths": [str(s) for s in scenes]},
          "model": {"type": "torchscript", "path": str(model)},
          "tiling": {"roi_size": 64, "overlap": 0.25, "block_size": 256},
          "output": {"directory": str(disk / "out")},
          "resources": {"workers": 1, "backend": "local"}}
    path = tmp / "wf.yaml"
    path.write_text(yaml.safe_dump(wf))
    return path


def _in_namespace(tmp: Path, disk: Path, commands: str) -> subprocess.CompletedProcess[str]:
    """Run shell ``commands`` with a tmpfs of DISK_MIB at ``disk`` (it lives as long as they run)."""
    shell = f"mount -t tmpfs -o size={DISK_MIB}m tmpfs {disk} && {commands}"
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", shell],
                          capture_output=True, text=True, timeout=600, cwd=tmp)


def test_a_job_on_a_filling_disk_finishes_what_fits_and_the_rerun_redoes_the_rest(
    tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path],
) -> None:
    rng = np.random.default_rng(3)
    # noise through a random 64-class model: labels that hardly compress
    sizes = {"a_small": 128, "b_large": 1536, "c_small": 128, "d_small": 160}
    scenes = [write_raster(f"{n}.tif", rng.integers(0, 255, (3, s, s)).astype("uint8")) for n, s in sizes.items()]
    model = conv_model(in_channels=3, classes=64)
    disk = tmp_path / "disk"
    disk.mkdir()
    wf = _job(tmp_path, scenes, model, disk)
    geoseg = f"{BIN / 'geoseg'} --no-progress run {wf}"
    keep = tmp_path / "kept"  # the tmpfs goes with the namespace: its contents are copied out after each run
    script = (f"{geoseg} > first.log 2>&1; echo first=$? >> first.log; cp -a {disk}/out {keep}-1; "
              # space is freed: the file system is grown (as an operator would), and the job runs again
              f"mount -o remount,size=64m {disk} && {geoseg} > second.log 2>&1; echo second=$? >> second.log; "
              f"cp -a {disk}/out {keep}-2")
    done = _in_namespace(tmp_path, disk, script)
    first = (tmp_path / "first.log").read_text(encoding="utf-8")
    second = (tmp_path / "second.log").read_text(encoding="utf-8")
    assert done.returncode == 0, done.stderr + first + second

    out1 = Path(f"{keep}-1")
    job1 = json.loads((out1 / "summary.json").read_text(encoding="utf-8"))
    status = {i["item"]: i for i in job1["items"]}
    assert status["b_large"]["status"] == "failed", status
    error = status["b_large"]["error"]
    assert "no space left on device" in error and str(disk / "out" / "b_large") in error, error
    assert [n for n, i in status.items() if i["status"] == "ok"] == ["a_small", "c_small", "d_small"], status
    assert "first=1" in first  # a failed item fails the job's exit status
    assert not (out1 / "b_large" / "labels.tif").exists()  # nothing of it looks complete
    assert not list((out1 / "b_large").glob(".staging-*"))
    with sqlite3.connect(out1 / "ledger.sqlite") as db:
        rows = dict(db.execute("SELECT item, status FROM items").fetchall())
    assert rows == {"a_small": "ok", "b_large": "failed", "c_small": "ok", "d_small": "ok"}

    out2 = Path(f"{keep}-2")
    job2 = json.loads((out2 / "summary.json").read_text(encoding="utf-8"))
    status2 = {i["item"]: i["status"] for i in job2["items"]}
    large = next(i for i in job2["items"] if i["item"] == "b_large")
    assert large["blocks_resumed"] > 0  # the blocks journaled before the disk filled are not computed again
    assert "second=0" in second, second
    assert status2 == {"a_small": "skipped", "b_large": "ok", "c_small": "skipped", "d_small": "skipped"}
    with rasterio.open(out2 / "b_large" / "labels.tif") as ds:
        assert ds.shape == (1536, 1536)
        labels = ds.read(1)
    assert len(np.unique(labels)) > 32  # the noise it was meant to be
