"""The driver never reads an item's pixels (issue 11): a worker stages a volume (a ``.nii.gz``
inflated, an ``s3://`` object fetched) and computes its z-score statistics; the driver reads
headers only, on a real Ray and against a real S3 server on loopback, and the labels still equal
MONAI's pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from monai.transforms import NormalizeIntensity

from geoseg_pipeline.api import run_workflow
from geoseg_pipeline.ledger import ItemKey
from geoseg_pipeline.runtime.item_run import ItemRun
from geoseg_pipeline.sinks import ClassLegend
from geoseg_pipeline.sources.discovery import Item
from geoseg_pipeline.spec import parse_workflow
from geoseg_pipeline.tasks import ItemFacts, ItemJob, ModelInfo

pytestmark = pytest.mark.usefixtures("clean_aws_environment", "ray_local")

BUCKET = "prepare-data"
ROI = (16, 16, 8)


def _net(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 3, padding=1))
    path = tmp_path / "net.pt"
    torch.jit.script(net.eval()).save(str(path))
    return net.eval(), path


def _mr(seed: int) -> np.ndarray:
    data = np.zeros((30, 28, 20), np.float32)
    data[3:27, 4:25, 2:18] = np.random.default_rng(seed).normal(300 + 50 * seed, 60, (24, 21, 16))
    return data


def _monai(net: torch.nn.Module, data: np.ndarray) -> np.ndarray:
    x = NormalizeIntensity(nonzero=True)(torch.from_numpy(data[None].copy()))[None].float()  # in place
    with torch.no_grad():
        return sliding_window_inference(x, ROI, 4, net, overlap=0.5, mode="gaussian")[0].argmax(0).numpy()




def _refuse_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    """In this (the driver's) process, reading a NIfTI's voxels, inflating or fetching fails."""
    import geoseg_pipeline.sources.nifti_source as nifti_source

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the driver read pixels")

    monkeypatch.setattr(nifti_source.NiftiSource, "_slab", refuse)
    monkeypatch.setattr(nifti_source, "staged_copy", refuse)
    monkeypatch.setattr(nifti_source, "fetch_to", refuse)


def test_ray_workers_stage_and_zscore_while_the_driver_reads_headers(
    tmp_path: Path, s3_env: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    net, model = _net(tmp_path)
    local, remote = _mr(0), _mr(1)
    affine = np.diag([-0.9, 0.9, 2.0, 1.0])
    nib.save(nib.Nifti1Image(local, affine), tmp_path / "mr0.nii.gz")
    nib.save(nib.Nifti1Image(remote, affine), tmp_path / "mr1.nii.gz")
    s3_env.upload_file(str(tmp_path / "mr1.nii.gz"), BUCKET, "mr1.nii.gz")
    _refuse_pixels(monkeypatch)
    wf = {
        "inputs": {"paths": [str(tmp_path / "mr0.nii.gz"), f"s3://{BUCKET}/mr1.nii.gz"]},
        "model": {"type": "torchscript", "path": str(model)},
        "preprocessing": {"intensity": {"mode": "zscore_nonzero"}},
        "tiling": {"roi_size": list(ROI), "overlap": 0.5, "blend": "gaussian", "batch_size": 4},
        "output": {"directory": str(tmp_path / "out")},
        "resources": {"workers": 2, "backend": "ray"},
    }
    result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert result.ok, result.outcomes
    assert json.loads((tmp_path / "out/summary.json").read_text())["backend"] == "ray"
    for name, data in (("mr0", local), ("mr1", remote)):
        out = nib.load(tmp_path / "out" / name / "labels.nii.gz")
        assert np.allclose(out.affine, affine) and out.shape == data.shape
        labels = np.asarray(out.dataobj)
        assert (labels == _monai(net, data)).mean() >= 0.9999
        assert not list((tmp_path / "out" / name).glob(".*"))  # no scratch left


def test_opening_an_item_reads_its_header_and_hands_the_rest_to_a_worker(tmp_path: Path) -> None:
    """The driver's ItemRun.open: no staged copy, no statistics of its own; what the worker
    found goes into the job."""
    nib.save(nib.Nifti1Image(_mr(0), np.diag([0.9, 0.9, 2.0, 1.0])), tmp_path / "mr.nii.gz")
    spec = parse_workflow({
        "inputs": {"paths": [str(tmp_path / "mr.nii.gz")]},
        "model": {"type": "torchscript", "path": str(tmp_path / "unused.pt")},
        "preprocessing": {"intensity": {"mode": "zscore_nonzero"}},
        "tiling": {"roi_size": list(ROI), "block_size": 16},
        "output": {"directory": str(tmp_path / "out")},
    }, tmp_path)
    item = Item("mr", str(tmp_path / "mr.nii.gz"))
    asked: list[ItemJob] = []

    def prepare(job: ItemJob) -> ItemFacts:
        asked.append(job)
        return ItemFacts(str(tmp_path / "worker-copy.nii"), (300.0,), (60.0,))

    info, legend = ModelInfo(1, 3, 3), ClassLegend(("a", "b", "c"), ("#000000", "#ff0000", "#00ff00"))
    run = ItemRun.open(item, spec, info, legend, ItemKey("f", "m", "c"), prepare=prepare)
    assert len(asked) == 1 and asked[0].staged and asked[0].zscore_nonzero and asked[0].preprocessing.mean is None
    assert run.job.preprocessing.mean == (300.0,) and run.job.preprocessing.std == (60.0,)
    assert run.job.preprocessing.nonzero_only and run.job.data_path == str(tmp_path / "worker-copy.nii")
    assert not run.job.needs_preparation
    assert [p.name for p in (tmp_path / "out" / "mr").rglob("*mr.nii")] == []  # no staged <tag>-mr.nii here
    run.fail("test")

    with pytest.raises(ValueError, match="no worker was given"):
        ItemRun.open(item, spec, info, legend, ItemKey("f", "m", "c"))
