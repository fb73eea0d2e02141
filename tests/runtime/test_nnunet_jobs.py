"""Jobs with nnU-Net v2 trained model folders: labels equal ``nnUNetPredictor``'s (same folder,
folds, mirroring) on the input's exact grid, on both backends, 3D and 2D configurations, a
real MR volume and a CT-like one; ``geoseg predict --model FOLDER`` recognises the folder."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nnunet_folders import BREAST, nnunet_predict, write_ct_volume, write_model_folder

from geoseg_pipeline.api import predict, run_workflow
from geoseg_pipeline.cli import main
from geoseg_pipeline.spec import parse_workflow

pytestmark = pytest.mark.usefixtures("ray_local")


def _agree(mine: Path, ref: Path) -> float:
    a, b = nib.load(mine), nib.load(ref)
    assert a.shape == b.shape
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-5)
    return float((np.asarray(a.dataobj) == np.asarray(b.dataobj)).mean())


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_a_3d_fold_ensemble_equals_nnunet(tmp_path: Path, backend: str) -> None:
    folder = write_model_folder(tmp_path / "models", folds=(0, 1), logit_scale=10.0)
    ct = write_ct_volume(tmp_path / "ct.nii.gz")
    ref = nnunet_predict(folder, [ct, BREAST], tmp_path / "ref")
    spec = parse_workflow({
        "inputs": {"paths": [str(ct), str(BREAST)]},
        "model": {"type": "nnunet", "path": str(folder)},
        "output": {"directory": str(tmp_path / "out")},
        "resources": {"backend": backend, "workers": 2},
        "tiling": {"block_size": 32},
    }, tmp_path)
    result = run_workflow(spec, progress=False)
    assert result.ok, result
    for name, r in zip(("ct", "breast1_image"), ref, strict=True):
        assert _agree(tmp_path / "out" / name / "labels.nii.gz", r) >= 0.999
    stats = json.loads((tmp_path / "out" / "ct" / "stats.json").read_text())
    assert [c["class_name"] for c in stats["classes"]] == ["background", "organ", "lesion"]
    assert stats["nnunet"]["folds"] == ["0", "1"] and stats["nnunet"]["mirroring"] is True


def test_predict_recognises_the_folder_2d_and_no_mirroring(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "models", configuration_name="2d", patch=(32, 32), spacing=(0.6, 0.6),
                                schemes=("ZScoreNormalization",), mask_for_norm=(True,), mirror_axes=(0, 1),
                                folds=(0, 1), logit_scale=10.0)
    ref = nnunet_predict(folder, [BREAST], tmp_path / "ref", folds=(1,), mirroring=False)
    assert main(["--no-progress", "predict", str(BREAST), "--model", str(folder), "--out", str(tmp_path / "out"),
                 "--folds", "1", "--no-mirroring"]) == 0
    assert _agree(tmp_path / "out" / "breast1_image" / "labels.nii.gz", ref[0]) >= 0.999


def test_folds_are_refused_for_another_model(tmp_path: Path) -> None:
    from geoseg_pipeline.errors import SpecError

    with pytest.raises(SpecError, match="not an nnU-Net model folder"):
        predict([str(BREAST)], "ct-demo", tmp_path / "out", folds=["0"])


def test_a_region_model_and_a_case_with_the_wrong_channels(tmp_path: Path) -> None:
    labels = {"background": 0, "whole": [1, 2], "core": 2}
    folder = write_model_folder(tmp_path / "models", labels=labels, regions_class_order=[1, 2],
                                schemes=("ZScoreNormalization",), logit_scale=10.0)
    ref = nnunet_predict(folder, [BREAST], tmp_path / "ref")
    two = tmp_path / "two_channels.nii.gz"
    img = nib.load(BREAST)
    data = np.asarray(img.dataobj)
    nib.save(nib.Nifti1Image(np.stack([data, data], axis=-1), img.affine), two)
    flat = tmp_path / "one_slice.nii.gz"  # to a 3D configuration: refused naming the file (was skimage's error)
    nib.save(nib.Nifti1Image(data[:, :, :1, None], img.affine), flat)
    holed = tmp_path / "one_nan.nii.gz"  # named where it lies in the file, not where resampling spread it
    with_nan = data.astype(np.float32)
    with_nan[10, 11, 2] = np.nan
    nib.save(nib.Nifti1Image(with_nan, img.affine), holed)
    spec = parse_workflow({
        "inputs": {"paths": [str(BREAST), str(two), str(flat), str(holed)], "channel_axis": 3},
        "model": {"type": "nnunet", "path": str(folder)},
        "output": {"directory": str(tmp_path / "out")},
        "resources": {"backend": "local", "workers": 1},
    }, tmp_path)
    result = run_workflow(spec, progress=False)
    outcomes = {o.item: o for o in result.outcomes}
    assert outcomes["breast1_image"].status == "ok"
    assert outcomes["two_channels"].status == "failed"
    assert "takes 1 channel(s) (MR0 in dataset.json) but the volume has 2" in str(outcomes["two_channels"].error)
    assert f"{flat}: a 2D image (shape" in str(outcomes["one_slice"].error)
    assert "given to the 3D nnU-Net configuration" in str(outcomes["one_slice"].error)
    assert outcomes["one_nan"].status == "failed"
    assert ("1 voxel value(s) are NaN or infinite (first: channel 1, voxel (10, 11, 2) of the volume as read); "
            "nnU-Net models take none") in str(outcomes["one_nan"].error)
    assert _agree(tmp_path / "out" / "breast1_image" / "labels.nii.gz", ref[0]) >= 0.999
    names = [c["class_name"] for c in json.loads((tmp_path / "out" / "breast1_image" / "stats.json").read_text())
             ["classes"]]
    assert names == ["background", "whole", "core"]


def test_a_dicom_series_reads_as_its_nifti_conversion(tmp_path: Path) -> None:
    import SimpleITK as sitk
    from dicom_files import ct_phantom, orthonormal_affine, write_series

    folder = write_model_folder(tmp_path / "models", logit_scale=10.0)
    series = tmp_path / "archive" / "patient1"
    write_series(series, ct_phantom((48, 44, 20), 0), orthonormal_affine((0.9, 0.8, 3.0), 0.0), slope=2.0,
                 intercept=-1024.0)
    # the reference: nnU-Net on SimpleITK's NIfTI conversion of the series
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    nifti = tmp_path / "converted_0000.nii.gz"
    sitk.WriteImage(sitk.Cast(reader.Execute(), sitk.sitkFloat32), str(nifti))
    ref = nnunet_predict(folder, [nifti], tmp_path / "ref")[0]
    spec = parse_workflow({
        "inputs": {"paths": [str(tmp_path / "archive")], "format": "dicom"},
        "model": {"type": "nnunet", "path": str(folder)},
        "output": {"directory": str(tmp_path / "out")},
        "resources": {"backend": "local", "workers": 1},
    }, tmp_path)
    result = run_workflow(spec, progress=False)
    assert result.ok, result
    (out,) = (tmp_path / "out").glob("*/labels.nii.gz")
    mine, theirs = nib.as_closest_canonical(nib.load(out)), nib.as_closest_canonical(nib.load(ref))
    assert mine.shape == theirs.shape
    np.testing.assert_allclose(mine.affine, theirs.affine, atol=1e-3)
    agree = (np.asarray(mine.dataobj) == np.asarray(theirs.dataobj)).mean()
    assert agree >= 0.999 and len(np.unique(np.asarray(theirs.dataobj))) > 1


@pytest.mark.slow
def test_a_killed_run_resumes_an_nnunet_item_from_its_committed_blocks(tmp_path: Path) -> None:
    import yaml
    from test_resume import _geoseg, _journal, _kill_when, _run

    folder = write_model_folder(tmp_path / "models", patch=(16, 16, 16), spacing=(2.5, 0.9, 0.8),
                                logit_scale=10.0, folds=(0, 1))
    rng = np.random.default_rng(3)
    vol = rng.normal(40, 60, (80, 80, 32)).astype(np.int16)
    vol[20:60, 30:70, 8:24] += 300
    path = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.9, 2.5, 1.0])), path)

    def workflow(out: Path) -> Path:
        wf = tmp_path / f"{out.name}.yaml"
        wf.write_text(yaml.safe_dump({
            "inputs": {"paths": [str(path)]}, "model": {"type": "nnunet", "path": str(folder)},
            "tiling": {"block_size": 32, "batch_size": 1}, "output": {"directory": str(out)},
            "resources": {"backend": "local", "workers": 1}}))
        return wf

    out = tmp_path / "out"
    proc = _geoseg(tmp_path, "run", str(workflow(out)))
    _kill_when(proc, lambda: len(_journal(out / "big")) >= 3)
    committed = _journal(out / "big")
    assert not (out / "big" / "labels.nii.gz").exists()
    assert "resuming" in _run(tmp_path, workflow(out))
    stats = json.loads((out / "big" / "stats.json").read_text())
    assert stats["blocks_resumed"] == len(committed) >= 3
    calm = tmp_path / "calm"
    _run(tmp_path, workflow(calm))
    a = np.asarray(nib.load(out / "big" / "labels.nii.gz").dataobj)
    b = np.asarray(nib.load(calm / "big" / "labels.nii.gz").dataobj)
    assert np.array_equal(a, b) and len(np.unique(a)) > 1
