"""A PACS that misbehaves: a fault-injecting proxy on loopback in front of a real Orthanc (DICOMweb
plugin) answers a share of QIDO-RS, WADO-RS and STOW-RS requests with 500, 503 or a dropped
connection. The job completes with every item ok and every SEG stored, the retries counted in
``summary.json``; a STOW-RS endpoint that stays down fails the items with its reason, in bounded
time, and leaves no SEG that looks stored."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import torch
from dicom_files import HuBands, ct_phantom, orthonormal_affine, write_series
from flaky_s3 import FlakyS3Proxy
from orthanc_server import Pacs, orthanc, upload

from geoseg_pipeline.api import run_workflow
from geoseg_pipeline.spec import parse_workflow

pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning")]


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    with orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        folder = tmp_path_factory.mktemp("series")
        for i in range(2):
            files = write_series(folder / f"s{i}", ct_phantom((32, 32, 8), 10 + i), orthonormal_affine((1, 1, 2)),
                                 slope=2.0, intercept=-1024.0, modality="CT")
            upload(server, files)
        yield server


@pytest.fixture()
def proxy(pacs: Pacs, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlakyS3Proxy]:
    monkeypatch.setenv("GEOSEG_DICOMWEB_USER", pacs.user)
    monkeypatch.setenv("GEOSEG_DICOMWEB_PASSWORD", pacs.password)
    with FlakyS3Proxy(pacs.url) as p:
        yield p


def _workflow(tmp_path: Path, root: str) -> Any:
    model = tmp_path / "bands.pt"
    torch.jit.script(HuBands()).save(str(model))
    return parse_workflow({
        "inputs": {"dicomweb": {"url": root, "query": {"Modality": "CT"}}},
        "model": {"type": "torchscript", "path": str(model)},
        "classes": [{"name": "background"}, {"name": "organ"}, {"name": "lesion"}],
        "tiling": {"roi_size": [16, 16, 8], "overlap": 0.25, "block_size": 16},
        "output": {"directory": str(tmp_path / "out"), "formats": ["nifti", "dicom-seg"],
                   "dicomweb": {"url": root}},
        "resources": {"workers": 2, "backend": "ray"},
    }, tmp_path)


def _segs(pacs: Pacs) -> int:
    r = requests.get(f"{pacs.dicomweb}/series", params={"Modality": "SEG"}, auth=pacs.auth, timeout=10)
    r.raise_for_status()
    return len(r.json()) if r.text else 0


def test_a_flaky_pacs_costs_no_item_and_the_retries_are_counted(tmp_path: Path, pacs: Pacs,
                                                               proxy: FlakyS3Proxy) -> None:
    before = _segs(pacs)
    proxy.fail_fraction(0.25, "/dicom-web/", seed=4)
    try:
        result = run_workflow(_workflow(tmp_path, f"{proxy.url}/dicom-web"), progress=False)
    finally:
        proxy.stop_failing()
    assert result.ok, result.outcomes
    assert len(result.outcomes) == 2
    assert proxy.injected >= 3
    hit = {s.method for s in proxy.seen if s.status in (0, 500, 503)}
    assert "GET" in hit, hit  # QIDO/WADO were hit (STOW's POSTs too, when the draw says so)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["retries"]["dicomweb"] > 0, summary["retries"]
    assert _segs(pacs) == before + 2  # each SEG stored once


def test_a_stow_endpoint_that_stays_down_fails_the_items_in_bounded_time(tmp_path: Path, pacs: Pacs,
                                                                          proxy: FlakyS3Proxy) -> None:
    before = _segs(pacs)
    # every POST to the studies resource (STOW-RS) fails; QIDO and WADO still answer
    proxy.fail_fraction(1.0, "^/dicom-web/studies $", drop_share=0.0, seed=5)
    started = time.monotonic()
    try:
        result = run_workflow(_workflow(tmp_path, f"{proxy.url}/dicom-web"), progress=False)
    finally:
        proxy.stop_failing()
    assert time.monotonic() - started < 180
    assert [o.status for o in result.outcomes] == ["failed", "failed"]
    for o in result.outcomes:
        assert "STOW-RS" in o.error and ("HTTP 503" in o.error or "HTTP 500" in o.error), o.error
        assert not (tmp_path / "out" / o.item / "labels.dcm").exists()
    assert _segs(pacs) == before
