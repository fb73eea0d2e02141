"""Jobs over a folder of DICOM series (``inputs.format: dicom``) on a real Ray: every image
series is an item whose labels equal MONAI's sliding window over SimpleITK's reading of the
series, on its exact grid, as ``labels.nii.gz`` and as a DICOM SEG (read back independently,
checked by dciodvfy); statistics and the cohort table carry the study's attributes (or not, with
``output.identifiers: false``); a series that is not one clean volume fails alone with its reason
(summary and ledger); objects that are not images are skipped."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from dicom_files import (
    OBLIQUE,
    HuBands,
    ct_phantom,
    dciodvfy,
    itk_series,
    monai_labels,
    orthonormal_affine,
    read_seg,
    write_series,
    write_text_report,
)
from pydicom.uid import JPEG2000Lossless

from geoseg_pipeline.api import run_workflow
from geoseg_pipeline.spec import parse_workflow

pytestmark = [pytest.mark.usefixtures("ray_local"),
              pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning")]

ROI = (16, 16, 8)


def test_a_dicom_archive_job(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    files = {
        "patient1_ct": write_series(archive / "patient1" / "ct", ct_phantom((48, 44, 20), 0), OBLIQUE, slope=2.0,
                                    intercept=-1024.0),
        "patient2": write_series(archive / "patient2", ct_phantom((64, 64, 12), 1),
                                 orthonormal_affine((0.9, 0.9, 3.0), -15.0), slope=2.0, intercept=-1024.0,
                                 syntax=JPEG2000Lossless),
    }
    gap = write_series(archive / "patient3", ct_phantom((40, 40, 10), 2), orthonormal_affine((1.0, 1.0, 2.0)))
    gap[5].unlink()
    write_text_report(archive / "patient1" / "ct" / "sr.dcm")
    model = tmp_path / "bands.pt"
    torch.jit.script(HuBands()).save(str(model))
    wf = {
        "inputs": {"paths": [str(archive)], "format": "dicom"},
        "model": {"type": "torchscript", "path": str(model)},
        "classes": [{"name": "background"}, {"name": "organ"}, {"name": "lesion"}],
        "tiling": {"roi_size": list(ROI), "overlap": 0.25, "block_size": 16},
        "statistics": {"lesion_classes": [2]},
        "output": {"directory": str(tmp_path / "out"), "formats": ["nifti", "dicom-seg"]},
        "resources": {"workers": 2, "backend": "ray"},
    }
    result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    by_name = {o.item: o for o in result.outcomes}
    assert sorted(by_name) == ["patient1_ct", "patient2", "patient3"]
    assert by_name["patient3"].status == "failed" and "missing slices" in (by_name["patient3"].error or "")
    for name, folder in (("patient1_ct", archive / "patient1" / "ct"), ("patient2", archive / "patient2")):
        assert by_name[name].status == "ok", by_name[name]
        hu, affine = itk_series(folder)
        ref = monai_labels(hu, ROI)
        out = nib.load(tmp_path / "out" / name / "labels.nii.gz")
        assert out.shape == hu.shape and np.allclose(out.affine, affine, atol=1e-4)
        labels = np.asarray(out.dataobj)
        assert (labels == 2).sum() > 50 and (labels == ref).mean() >= 0.9999
        seg_labels, seg = read_seg(tmp_path / "out" / name / "labels.dcm", files[name])
        np.testing.assert_array_equal(seg_labels, labels)
        assert dciodvfy(tmp_path / "out" / name / "labels.dcm") == []
        assert [s.SegmentLabel for s in seg.SegmentSequence] == ["organ", "lesion"]
        stats = json.loads((tmp_path / "out" / name / "stats.json").read_text())
        assert stats["study"] == {"PatientID": "PHANTOM-1", "StudyInstanceUID": seg.StudyInstanceUID,
                                  "StudyDate": "20240315", "SeriesDescription": "test series", "Modality": "CT"}
        voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000
        assert stats["classes"][2]["volume_ml"] == pytest.approx((labels == 2).sum() * voxel_ml, rel=1e-6)
        assert not list((tmp_path / "out" / name).glob(".*"))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    failed = [i for i in summary["items"] if i["status"] == "failed"]
    assert [i["item"] for i in failed] == ["patient3"] and "missing slices" in failed[0]["error"]
    with open(tmp_path / "out" / "cohort.csv", newline="") as f:
        cohort = {row["item"]: row for row in csv.DictReader(f)}
    assert cohort["patient2"]["PatientID"] == "PHANTOM-1" and cohort["patient2"]["Modality"] == "CT"
    with sqlite3.connect(tmp_path / "out" / "ledger.sqlite") as db:
        rows = dict(db.execute("SELECT item, status FROM items").fetchall())
    assert rows == {"patient1_ct": "ok", "patient2": "ok", "patient3": "failed"}

    again = run_workflow(parse_workflow(wf, tmp_path), progress=False)  # nightly: nothing new
    assert sorted((o.item, o.status) for o in again.outcomes if o.status == "skipped") == [
        ("patient1_ct", "skipped"), ("patient2", "skipped")]


def test_identifiers_are_left_out_when_asked(tmp_path: Path) -> None:
    write_series(tmp_path / "ct", ct_phantom((32, 32, 10), 3), OBLIQUE, slope=2.0, intercept=-1024.0)
    model = tmp_path / "bands.pt"
    torch.jit.script(HuBands()).save(str(model))
    wf = {
        "inputs": {"paths": [str(tmp_path / "ct")], "format": "dicom"},
        "model": {"type": "torchscript", "path": str(model)},
        "tiling": {"roi_size": list(ROI)},
        "output": {"directory": str(tmp_path / "out"), "identifiers": False},
        "resources": {"workers": 1, "backend": "local"},
    }
    result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert result.ok, result.outcomes
    written = "".join(p.read_text(errors="replace") for p in (tmp_path / "out").rglob("*")
                      if p.is_file() and p.suffix in (".json", ".csv", ".html"))
    with sqlite3.connect(tmp_path / "out" / "ledger.sqlite") as db:
        written += "".join(str(r) for r in db.execute("SELECT * FROM items"))
    assert "PHANTOM-1" not in written and "20240315" not in written and "StudyInstanceUID" not in written
    stats = json.loads((tmp_path / "out" / "ct" / "stats.json").read_text())
    assert stats["study"] == {"SeriesDescription": "test series", "Modality": "CT"}
