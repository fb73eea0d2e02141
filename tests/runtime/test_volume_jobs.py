"""Volume jobs end to end on a real local Ray: NIfTI in, NIfTI out on the same grid, mL, lesions."""

from __future__ import annotations

import csv
import gzip
import json
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from geoseg_pipeline.api import predict, run_workflow
from geoseg_pipeline.spec import parse_workflow

pytestmark = pytest.mark.usefixtures("ray_local")


class _Bands(torch.nn.Module):
    """Exact model: class 0 below 100, class 1 in [100, 200), class 2 from 200 (HU-like)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([100 - x, -torch.abs(x - 150) + 50, x - 200], dim=1)


def _volume(tmp_path: Path, name: str = "ct.nii.gz") -> tuple[Path, np.ndarray, np.ndarray]:
    shape = (40, 36, 18)
    data = np.zeros(shape, dtype=np.int16)
    data[5:30, 4:30, 2:15] = 80  # organ: 2 * 80 - 10 = 150 HU
    data[8:14, 8:14, 4:8] = 130  # lesion 1 (250 HU), 6*6*4 = 144 voxels
    data[20:28, 20:24, 10:13] = 130  # lesion 2, 8*4*3 = 96 voxels, crosses the 16-voxel blocks
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])  # LPS, anisotropic
    affine[:3, 3] = (30.0, 20.0, -40.0)
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(">i2")  # big-endian on disk
    img.header.set_slope_inter(2.0, -10.0)  # stored s -> 2 s - 10 HU
    img.set_sform(affine, 1)
    img.set_qform(affine, 1)
    path = tmp_path / name
    nib.save(img, path)
    hu = np.asarray(nib.load(path).get_fdata(), dtype=np.float32)
    return path, hu, affine


def test_nifti_volume_job(tmp_path: Path) -> None:
    model = tmp_path / "bands.pt"
    torch.jit.script(_Bands()).save(str(model))
    path, hu, affine = _volume(tmp_path)
    result = predict([path], str(model), tmp_path / "out", roi_size=[16, 16, 8], overlap=0.25,
                     classes=["background", "organ", "lesion"], lesion_classes=[2], workers=2, progress=False)
    assert result.ok, result.outcomes
    out = tmp_path / "out" / "ct"
    labels_img = nib.load(out / "labels.nii.gz")
    src = nib.load(path)
    assert labels_img.shape == src.shape
    assert np.allclose(labels_img.affine, src.affine)
    assert int(labels_img.header["sform_code"]) == 1 and int(labels_img.header["qform_code"]) == 1
    labels = np.asarray(labels_img.dataobj)
    assert labels.dtype == np.uint8
    expected = np.digitize(hu, [100, 200]).astype(np.uint8)  # the model's exact answer
    assert np.array_equal(labels, expected)
    # the same as MONAI's sliding window over the whole volume
    with torch.no_grad():
        ref = sliding_window_inference(torch.from_numpy(hu)[None, None], (16, 16, 8), 4, _Bands(), overlap=0.25,
                                       mode="gaussian")
    assert np.array_equal(labels, ref[0].argmax(0).numpy())

    doc = json.loads((out / "stats.json").read_text())
    voxel_ml = 0.8 * 0.8 * 2.5 / 1000
    assert doc["voxel_volume_mm3"] == pytest.approx(1.6)
    lesion_voxels = int((expected == 2).sum())
    assert doc["classes"][2]["pixels"] == lesion_voxels
    assert doc["classes"][2]["volume_ml"] == pytest.approx(lesion_voxels * voxel_ml)
    assert doc["lesion_count"] == 2
    assert doc["lesion_burden_ml"] == pytest.approx((144 + 96) * voxel_ml)
    rows = list(csv.DictReader((out / "lesions.csv").read_text().splitlines()))
    assert [int(r["voxels"]) for r in rows] == [144, 96]
    centre = affine @ np.array([10.5, 10.5, 5.5, 1.0])  # lesion 1's voxel centroid, in scanner mm
    assert float(rows[0]["centroid_x_mm"]) == pytest.approx(centre[0])
    assert float(rows[0]["centroid_z_mm"]) == pytest.approx(centre[2])
    # 6 x 6 voxels of 0.8 mm: the axial diagonal between voxel centres is 5 * 0.8 * sqrt(2)
    assert float(rows[0]["longest_axial_diameter_mm"]) == pytest.approx(5 * 0.8 * np.sqrt(2))
    assert (out / "labels_ColorTable.ctbl").is_file() and (out / "labels.txt").is_file()
    report = (out / "report.html").read_text()
    assert "2 lesion(s)" in report and report.count("data:image/png;base64,") == 2
    assert not list(out.glob(".*"))  # no scratch, no staging left
    assert "ct,ok,2,lesion" in (tmp_path / "out" / "summary.csv").read_text()


def _nifti_bytes(tmp_path: Path, data: np.ndarray) -> bytes:
    """The bytes of an uncompressed NIfTI-1 file holding ``data``."""
    scratch = tmp_path / "scratch.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), scratch)
    raw = scratch.read_bytes()
    scratch.unlink()
    return raw


def test_bad_volumes_fail_alone(tmp_path: Path) -> None:
    model = tmp_path / "bands.pt"
    torch.jit.script(_Bands()).save(str(model))
    good, _, _ = _volume(tmp_path, "good.nii.gz")
    four_d = tmp_path / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 2), np.float32), np.eye(4)), four_d)
    flat = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 1), np.float32), np.eye(4)), flat)
    nan = np.zeros((20, 20, 10), np.float32)
    nan[3, 4, 5] = np.nan
    nan_path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(nan, np.eye(4)), nan_path)
    truncated = tmp_path / "truncated.nii.gz"
    raw = good.read_bytes()
    truncated.write_bytes(raw[: len(raw) // 2])
    img = nib.Nifti1Image(np.zeros((20, 20, 10), np.float32), np.eye(4))
    img.header["srow_z"] = [0, 0, 0, 0]  # a flat sform, and no qform to fall back on
    img.header["sform_code"], img.header["qform_code"] = 1, 0
    degenerate = tmp_path / "degenerate.nii"
    nib.save(nib.Nifti1Image(img.dataobj, None, img.header), degenerate)
    dims = tmp_path / "dims.nii.gz"  # the header says 30 slices, the data holds 10
    raw_dims = bytearray(_nifti_bytes(tmp_path, np.zeros((20, 20, 10), np.float32)))
    raw_dims[46:48] = struct.pack("<h", 30)  # dim[3]
    dims.write_bytes(gzip.compress(bytes(raw_dims)))
    items = [good, four_d, flat, nan_path, truncated, degenerate, dims]
    result = predict(items, str(model), tmp_path / "out", roi_size=[16, 16, 8], workers=2, progress=False)
    by_item = {o.item: o for o in result.outcomes}
    assert by_item["good"].status == "ok"
    expected = {"four_d": "4D", "flat": "2D image", "nan": "NaN", "truncated": "truncated",
                "degenerate": "not invertible", "dims": "header says (20, 20, 30)"}
    for name, fragment in expected.items():
        assert by_item[name].status == "failed", name
        assert fragment in by_item[name].error, (name, by_item[name].error)
        assert str(tmp_path / name) in by_item[name].error, by_item[name].error  # names the file
        assert not (tmp_path / "out" / name / "labels.nii.gz").exists()
        assert not list((tmp_path / "out").glob(f"{name}/.*")), name


def test_zscore_job_equals_monai_pipeline(tmp_path: Path) -> None:
    from monai.transforms import NormalizeIntensity

    from geoseg_pipeline.api import run_workflow
    from geoseg_pipeline.spec import parse_workflow

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 3, padding=1))
    model = tmp_path / "net.pt"
    torch.jit.script(net.eval()).save(str(model))
    rng = np.random.default_rng(2)
    data = np.zeros((30, 28, 20), np.float32)
    data[3:27, 4:25, 2:18] = rng.normal(300, 60, (24, 21, 16))
    path = tmp_path / "mr.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([-0.9, 0.9, 2.0, 1.0])), path)
    wf = {
        "inputs": {"paths": [str(path)]},
        "model": {"type": "torchscript", "path": str(model)},
        "preprocessing": {"intensity": {"mode": "zscore_nonzero"}},
        "tiling": {"roi_size": [16, 16, 8], "overlap": 0.5, "blend": "gaussian", "batch_size": 4},
        "output": {"directory": str(tmp_path / "out")},
        "resources": {"workers": 2},
    }
    result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert result.ok, result.outcomes
    x = NormalizeIntensity(nonzero=True)(torch.from_numpy(data[None]))[None].float()
    with torch.no_grad():
        ref = sliding_window_inference(x, (16, 16, 8), 4, net, overlap=0.5, mode="gaussian")[0].argmax(0).numpy()
    labels = np.asarray(nib.load(tmp_path / "out/mr/labels.nii.gz").dataobj)
    assert (labels == ref).mean() >= 0.9999


def test_reoriented_job_equals_monai_orientation_pipeline(tmp_path: Path) -> None:
    from monai.transforms import Orientation
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    from geoseg_pipeline.api import run_workflow
    from geoseg_pipeline.spec import parse_workflow

    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 3, padding=1))
    model = tmp_path / "net.pt"
    torch.jit.script(net.eval()).save(str(model))
    data = np.random.default_rng(3).normal(0, 1, (22, 30, 12)).astype(np.float32)
    affine = np.array([[0, 0, -2.0, 10], [-0.9, 0, 0, 5], [0, 0.8, 0, -3], [0, 0, 0, 1]])  # permuted, PIL-ish
    path = tmp_path / "vol.nii"
    nib.save(nib.Nifti1Image(data, affine), path)
    wf = {
        "inputs": {"paths": [str(path)]},
        "model": {"type": "torchscript", "path": str(model)},
        "preprocessing": {"orientation": "RAS"},
        "tiling": {"roi_size": [16, 16, 8], "overlap": 0.25},
        "output": {"directory": str(tmp_path / "out")},
        "resources": {"workers": 2},
    }
    result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert result.ok, result.outcomes
    # MONAI: reorient to RAS, sliding window, argmax; then back to the disk orientation
    from monai.data import MetaTensor

    x = Orientation(axcodes="RAS")(MetaTensor(torch.from_numpy(data[None]), affine=torch.from_numpy(affine)))
    with torch.no_grad():
        ras = sliding_window_inference(x[None].as_tensor(), (16, 16, 8), 4, net, overlap=0.25,
                                       mode="gaussian")[0].argmax(0).numpy()
    back = apply_orientation(ras, ornt_transform(axcodes2ornt(("R", "A", "S")), io_orientation(affine)))
    out = nib.load(tmp_path / "out/vol/labels.nii.gz")
    assert np.allclose(out.affine, affine) and out.shape == data.shape
    labels = np.asarray(out.dataobj)
    assert (labels == back).mean() >= 0.9999


@pytest.mark.parametrize("backend", ["ray", "local"])
def test_resampled_job_equals_monai_spacing_pipeline(tmp_path: Path, backend: str) -> None:
    """Orientation + spacing: MONAI's Orientation -> Spacing -> sliding window -> argmax, labels
    back onto the input grid by nearest neighbour (ResampleToMatch); same shape, affine, codes."""
    from monai.data import MetaTensor
    from monai.transforms import Orientation, ResampleToMatch, Spacing

    from geoseg_pipeline.api import run_workflow
    from geoseg_pipeline.spec import parse_workflow

    model = tmp_path / "bands.pt"
    torch.jit.script(_Bands()).save(str(model))
    shape = (48, 40, 14)
    ii, jj, kk = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    # smooth blobs in HU: an organ around 150 and a lesion above 200
    organ = 260 * np.exp(-(((ii - 24) / 14) ** 2 + ((jj - 20) / 12) ** 2 + ((kk - 7) / 5) ** 2))
    lesion = 160 * np.exp(-(((ii - 30) / 4) ** 2 + ((jj - 16) / 4) ** 2 + ((kk - 8) / 1.5) ** 2))
    data = (organ + lesion).astype(np.float32)
    affine = np.array([[0, -0.8, 0, 40], [-0.7, 0, 0, 30], [0, 0, 3.0, -20], [0, 0, 0, 1]])  # PLS, anisotropic
    path = tmp_path / "ct.nii"
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, 1)
    img.set_qform(affine, 1)
    nib.save(img, path)
    wf = {
        "inputs": {"paths": [str(path)]},
        "model": {"type": "torchscript", "path": str(model)},
        "preprocessing": {"orientation": "RAS", "spacing": [1.0, 1.0, 1.5]},
        "tiling": {"roi_size": [16, 16, 8], "overlap": 0.25, "block_size": 16},
        "statistics": {"lesion_classes": [2]},
        "output": {"directory": str(tmp_path / "out")},
        "resources": {"workers": 2, "backend": backend},
    }
    result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert result.ok, result.outcomes
    assert json.loads((tmp_path / "out/summary.json").read_text())["backend"] == backend

    x = MetaTensor(torch.from_numpy(data[None]), affine=torch.from_numpy(affine))
    ras = Orientation(axcodes="RAS")(x)
    model_space = Spacing(pixdim=(1.0, 1.0, 1.5), mode="bilinear")(ras)
    with torch.no_grad():
        logits = sliding_window_inference(model_space[None].as_tensor(), (16, 16, 8), 4, _Bands(), overlap=0.25,
                                          mode="gaussian")
    pred = MetaTensor(logits[0].argmax(0, keepdim=True).float(), affine=model_space.affine)
    back = ResampleToMatch(mode="nearest")(pred, x)[0].numpy()

    out = nib.load(tmp_path / "out/ct/labels.nii.gz")
    assert out.shape == data.shape and np.allclose(out.affine, affine)
    assert int(out.header["sform_code"]) == 1 and int(out.header["qform_code"]) == 1
    labels = np.asarray(out.dataobj)
    assert (labels == 2).sum() > 200
    assert (labels == back).mean() >= 0.999
    doc = json.loads((tmp_path / "out/ct/stats.json").read_text())
    assert doc["model_grid"]["shape"] == list(model_space.shape[1:])
    assert doc["classes"][2]["pixels"] == int((labels == 2).sum())
    assert not list((tmp_path / "out/ct").glob(".*"))


def test_zarr_label_output_equals_the_nifti(tmp_path: Path) -> None:
    from geoseg_pipeline.geometry import Window
    from geoseg_pipeline.sources.zarr_volume import ZarrVolumeSource

    model = tmp_path / "bands.pt"
    torch.jit.script(_Bands()).save(str(model))
    path, hu, _ = _volume(tmp_path)
    result = predict([path], str(model), tmp_path / "out", roi_size=[16, 16, 8], formats=["nifti", "zarr"],
                     workers=2, progress=False)
    assert result.ok, result.outcomes
    out = tmp_path / "out" / "ct"
    assert {Path(p).name for p in result.outcomes[0].outputs} >= {"labels.nii.gz", "labels.zarr"}
    nifti = np.asarray(nib.load(out / "labels.nii.gz").dataobj)
    src = ZarrVolumeSource(str(out / "labels.zarr"))
    try:
        assert src.grid.shape == hu.shape
        np.testing.assert_allclose(src.grid.affine, nib.load(path).affine, atol=1e-6)
        zarr_labels = src.read(Window((0, 0, 0), hu.shape))[0]
    finally:
        src.close()
    np.testing.assert_array_equal(zarr_labels, nifti)
    assert np.array_equal(nifti, np.digitize(hu, [100, 200]))
    assert not list(out.glob(".*"))


def test_zarr_only_output_with_lesions(tmp_path: Path) -> None:
    """A volume job writing only labels.zarr still gets its lesions and report (which read the
    labels back from whatever the job wrote, never a labels.nii.gz that does not exist)."""
    model = tmp_path / "bands.pt"
    torch.jit.script(_Bands()).save(str(model))
    path, _, _ = _volume(tmp_path)
    result = predict([path], str(model), tmp_path / "out", roi_size=[16, 16, 8], formats=["zarr"],
                     classes=["background", "organ", "lesion"], lesion_classes=[2], workers=1, progress=False)
    assert result.ok, result.outcomes
    out = tmp_path / "out" / "ct"
    assert not (out / "labels.nii.gz").exists()
    assert {Path(p).name for p in result.outcomes[0].outputs} >= {"labels.zarr", "stats.json", "report.html"}
    doc = json.loads((out / "stats.json").read_text())
    assert doc["lesion_count"] == 2
    report = (out / "report.html").read_text()
    assert "2 lesion(s)" in report and report.count("data:image/png;base64,") == 2
    assert not list(out.glob(".*"))


def test_a_failing_second_sink_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """All sinks of an item commit together or not at all: when labels.zarr cannot be finished,
    labels.nii.gz is not published either, and the item is failed in the summary and ledger."""
    from geoseg_pipeline.ledger import Ledger
    from geoseg_pipeline.sinks import ZarrLabelSink

    def broken(self: ZarrLabelSink) -> list[tuple[Path, Path]]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ZarrLabelSink, "_prepare", broken)
    model = tmp_path / "bands.pt"
    torch.jit.script(_Bands()).save(str(model))
    path, _, _ = _volume(tmp_path)
    result = predict([path], str(model), tmp_path / "out", roi_size=[16, 16, 8], formats=["nifti", "zarr"],
                     lesion_classes=[2], workers=1, progress=False)
    assert not result.ok
    outcome = result.outcomes[0]
    assert outcome.status == "failed" and "No space left on device" in outcome.error
    out = tmp_path / "out" / "ct"  # nothing published: no folder at all, or only the block journal
    assert not out.exists() or sorted(p.name for p in out.iterdir() if not p.name.startswith(".journal")) == []
    ledger = Ledger(tmp_path / "out")
    try:
        row = ledger.get("ct")
    finally:
        ledger.close()
    assert row is not None and row.status == "failed" and row.outputs == ()


def test_nan_voxels_declared_nodata_are_background(tmp_path: Path) -> None:
    """``inputs.nodata: .nan`` on a volume (NaN outside the body, as some pipelines write): the
    item runs, NaN voxels are fed as 0 like MONAI's padding and labelled 0, the rest is as
    without them; without the setting the item fails naming the NaN."""
    model = tmp_path / "bands.pt"
    torch.jit.script(_Bands()).save(str(model))
    _, hu, affine = _volume(tmp_path)
    hu[:, :, :3] = np.nan  # three planes of nothing
    hu[30:33, 20:26, 10:13] = np.nan  # a hole inside the organ
    path = tmp_path / "holes.nii.gz"
    nib.save(nib.Nifti1Image(hu, affine), path)
    refused = predict([path], str(model), tmp_path / "refused", roi_size=[16, 16, 8], overlap=0.25, workers=2,
                      progress=False)
    assert not refused.ok and "NaN" in (refused.outcomes[0].error or "")
    spec = parse_workflow({
        "inputs": {"paths": [str(path)], "nodata": "nan"},
        "model": {"type": "torchscript", "path": str(model)},
        "tiling": {"roi_size": [16, 16, 8], "overlap": 0.25},
        "output": {"directory": str(tmp_path / "out")},
        "resources": {"workers": 2},
    }, tmp_path, "nan-nodata")
    result = run_workflow(spec, progress=False)
    assert result.ok, result.outcomes
    labels = np.asarray(nib.load(tmp_path / "out" / "holes" / "labels.nii.gz").dataobj)
    nan = np.isnan(hu)
    assert (labels[nan] == 0).all()
    with torch.no_grad():
        ref = sliding_window_inference(torch.from_numpy(np.nan_to_num(hu, nan=0.0))[None, None], (16, 16, 8), 4,
                                       _Bands(), overlap=0.25, mode="gaussian")
    assert np.array_equal(labels[~nan], ref[0].argmax(0).numpy()[~nan])
    assert (labels[~nan] == 1).any() and (labels[~nan] == 2).any()
