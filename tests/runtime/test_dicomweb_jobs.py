"""A PACS on both ends, against a real Orthanc with its DICOMweb plugin on loopback (started
here; ``scripts/system-deps.sh`` installs it): series found with QIDO-RS, read with WADO-RS by the
Ray workers (credentials passed to them, never printed), labels equal to MONAI's over the series,
each item's DICOM SEG stored back with STOW-RS; nightly re-runs take only new series; an
unreachable or refusing server, and a refused STOW-RS, fail clearly."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import requests
import torch
from dicom_files import (
    OBLIQUE,
    HuBands,
    ct_phantom,
    itk_series,
    monai_labels,
    orthonormal_affine,
    read_seg,
    write_series,
)
from orthanc_server import Pacs, orthanc, upload

from geoseg_pipeline.api import run_workflow
from geoseg_pipeline.errors import JobError
from geoseg_pipeline.spec import parse_workflow

pytestmark = [pytest.mark.usefixtures("ray_local"),
              pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning")]

ROI = (16, 16, 8)


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    with orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture()
def credentials(pacs: Pacs, monkeypatch: pytest.MonkeyPatch) -> Pacs:
    monkeypatch.setenv("GEOSEG_DICOMWEB_USER", pacs.user)
    monkeypatch.setenv("GEOSEG_DICOMWEB_PASSWORD", pacs.password)
    return pacs


def _workflow(tmp_path: Path, pacs: Pacs, query: dict[str, str], stow: dict[str, Any] | None) -> Any:
    model = tmp_path / "bands.pt"
    torch.jit.script(HuBands()).save(str(model))
    output: dict[str, Any] = {"directory": str(tmp_path / "out"), "formats": ["nifti", "dicom-seg"]}
    if stow is not None:
        output["dicomweb"] = stow
    return parse_workflow({
        "inputs": {"dicomweb": {"url": pacs.dicomweb, "query": query}},
        "model": {"type": "torchscript", "path": str(model)},
        "classes": [{"name": "background"}, {"name": "organ"}, {"name": "lesion"}],
        "tiling": {"roi_size": list(ROI), "overlap": 0.25, "block_size": 16},
        "output": output,
        "resources": {"workers": 2, "backend": "ray"},
    }, tmp_path)


def _segs(pacs: Pacs) -> list[dict[str, Any]]:
    r = requests.get(f"{pacs.dicomweb}/series", params={"Modality": "SEG"}, auth=pacs.auth, timeout=10)
    r.raise_for_status()
    return r.json() if r.text else []


def test_series_from_the_pacs_and_segs_back_to_it(tmp_path: Path, credentials: Pacs,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    pacs = credentials
    cts = {
        "oblique": write_series(tmp_path / "src" / "a", ct_phantom((40, 36, 14), 0), OBLIQUE, slope=2.0,
                                intercept=-1024.0, modality="CT"),
        "axial": write_series(tmp_path / "src" / "b", ct_phantom((36, 40, 10), 1),
                              orthonormal_affine((0.9, 0.9, 3.0)), slope=2.0, intercept=-1024.0, modality="CT"),
    }
    gap = write_series(tmp_path / "src" / "c", ct_phantom((32, 32, 8), 2), orthonormal_affine((1, 1, 2)), modality="CT")
    gap[3].unlink()
    mr = write_series(tmp_path / "src" / "d", ct_phantom((32, 32, 8), 3), orthonormal_affine((1, 1, 2)), modality="MR")
    for files in (*cts.values(), [p for p in gap if p.exists()], mr):
        upload(pacs, files)
    before = len(_segs(pacs))
    spec = _workflow(tmp_path, pacs, {"Modality": "CT"}, {"url": pacs.dicomweb})
    result = run_workflow(spec, progress=False)
    outcomes = {o.item: o for o in result.outcomes}
    assert len(outcomes) == 3 and all(name.startswith("CT_3_") for name in outcomes)  # the MR is not asked for
    failed = [o for o in outcomes.values() if o.status == "failed"]
    assert len(failed) == 1 and "missing slices" in failed[0].error
    done = [o for o in outcomes.values() if o.status == "ok"]
    assert len(done) == 2
    for o in done:
        labels = np.asarray(nib.load(tmp_path / "out" / o.item / "labels.nii.gz").dataobj)
        folder = next(files[0].parent for files in cts.values()
                      if itk_series(files[0].parent)[0].shape == labels.shape)
        hu, affine = itk_series(folder)
        assert np.allclose(nib.load(tmp_path / "out" / o.item / "labels.nii.gz").affine, affine, atol=1e-4)
        assert (labels == monai_labels(hu, ROI)).mean() >= 0.9999 and (labels == 2).sum() > 10
        seg_labels, _ = read_seg(tmp_path / "out" / o.item / "labels.dcm", sorted(folder.iterdir()))
        np.testing.assert_array_equal(seg_labels, labels)
    stored = _segs(pacs)
    assert len(stored) == before + 2  # each complete item's SEG, stored with STOW-RS
    # the password reaches no output, log or ledger
    text = "".join(p.read_text(errors="replace") for p in (tmp_path / "out").rglob("*")
                   if p.is_file() and p.suffix in (".json", ".csv", ".html", ".txt"))
    with sqlite3.connect(tmp_path / "out" / "ledger.sqlite") as db:
        text += "".join(str(r) for r in db.execute("SELECT * FROM items"))
    assert pacs.password not in text and pacs.password not in caplog.text

    again = run_workflow(spec, progress=False)  # nightly: nothing new but the refused series again
    assert sorted(o.status for o in again.outcomes) == ["failed", "skipped", "skipped"]
    upload(pacs, write_series(tmp_path / "src" / "e", ct_phantom((32, 32, 8), 4), orthonormal_affine((1, 1, 2)),
                              slope=2.0, intercept=-1024.0, modality="CT"))
    third = run_workflow(spec, progress=False)
    assert sorted(o.status for o in third.outcomes) == ["failed", "ok", "skipped", "skipped"]


def test_an_unreachable_or_refusing_server_fails_clearly(tmp_path: Path, pacs: Pacs, free_port: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOSEG_DICOMWEB_USER", pacs.user)
    monkeypatch.setenv("GEOSEG_DICOMWEB_PASSWORD", "not-the-password")
    with pytest.raises(JobError, match=r"HTTP 401 \(check the credentials\)") as refused:
        run_workflow(_workflow(tmp_path, pacs, {}, None), progress=False)
    assert "not-the-password" not in str(refused.value)
    dead = Pacs(f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}/dicom-web", "u", "p")
    started = time.monotonic()
    with pytest.raises(JobError, match=r"cannot reach the DICOMweb server at http://127\.0\.0\.1"):
        run_workflow(_workflow(tmp_path, dead, {}, None), progress=False)
    # our 5 tries with backoff (under 8 s of waits), not dicomweb-client's retries inside each of
    # them as well (25 tries, 155 s)
    assert time.monotonic() - started < 30


def test_a_refused_stow_fails_the_item_and_leaves_no_seg(tmp_path: Path, credentials: Pacs) -> None:
    pacs = credentials
    upload(pacs, write_series(tmp_path / "src", ct_phantom((32, 32, 8), 5), orthonormal_affine((1, 1, 2)),
                              slope=2.0, intercept=-1024.0, modality="OT"))
    bad = tmp_path / "stow.json"
    bad.write_text(json.dumps({"user": pacs.user, "password": "wrong-stow-password"}))
    spec = _workflow(tmp_path, pacs, {"Modality": "OT"}, {"url": pacs.dicomweb, "credentials_file": str(bad)})
    result = run_workflow(spec, progress=False)
    [outcome] = result.outcomes
    assert outcome.status == "failed" and "STOW-RS" in outcome.error and "HTTP 401" in outcome.error
    assert "wrong-stow-password" not in outcome.error
    item = tmp_path / "out" / outcome.item
    assert not (item / "labels.dcm").exists() and not (item / "labels.nii.gz").exists()
