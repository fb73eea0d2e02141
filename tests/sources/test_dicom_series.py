"""DICOM series as volume items, against SimpleITK (ITK/GDCM's series reader) as the independent
reference for voxel values and geometry: grouping by series, slices ordered by position (not by
name or InstanceNumber), the RAS affine, rescale, compressed syntaxes, files without the
preamble, enhanced multi-frame objects, and every way a series is refused with its reason."""

from __future__ import annotations

import locale
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_files import (
    OBLIQUE,
    itk_series,
    orthonormal_affine,
    sheared,
    write_enhanced,
    write_series,
    write_text_report,
)
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

from geoseg_pipeline.errors import InputDataError, SourceError
from geoseg_pipeline.geometry import Window, full_window
from geoseg_pipeline.ledger import fingerprint
from geoseg_pipeline.sources import SourceOptions, dicom_source
from geoseg_pipeline.sources.dicom_discovery import dicom_items
from geoseg_pipeline.sources.dicom_series import find_series, scan_folder
from geoseg_pipeline.sources.dicom_source import DicomSeriesSource

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning")

SHAPE = (70, 66, 9)  # (i, j, k): J2K wants planes of 32 pixels at least
AXIAL = orthonormal_affine((0.8, 0.7, 2.5))


def _volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 2000, SHAPE).astype(np.int16)



def _only(folder: Path) -> DicomSeriesSource:
    scan = scan_folder(str(folder))
    assert len(scan.series) == 1, (scan.refused, scan.skipped)
    return DicomSeriesSource(scan.series[0].path)


@pytest.mark.parametrize(("syntax", "affine", "slope", "intercept"), [
    (ExplicitVRLittleEndian, AXIAL, 2.0, -1024.0),
    (ExplicitVRLittleEndian, OBLIQUE, 1.0, 0.0),
    (RLELossless, OBLIQUE, 1.0, -1024.0),
    (JPEG2000Lossless, AXIAL, 1.0, 0.0),
    (JPEGLSLossless, OBLIQUE, 2.0, -1024.0),
])
def test_a_series_reads_as_simpleitk_reads_it(tmp_path: Path, syntax: str, affine: np.ndarray, slope: float,
                                              intercept: float) -> None:
    vol = _volume()
    write_series(tmp_path / "s", vol, affine, slope=slope, intercept=intercept, syntax=syntax)
    src = _only(tmp_path / "s")
    data = src.read(full_window(SHAPE))
    ref, ref_affine = itk_series(tmp_path / "s")
    assert src.grid.shape == SHAPE and data.shape == (1, *SHAPE) and data.dtype == np.float32
    np.testing.assert_array_equal(data[0], ref.astype(np.float32))
    np.testing.assert_array_equal(data[0], vol * np.float32(slope) + np.float32(intercept))
    np.testing.assert_allclose(src.grid.affine, ref_affine, atol=1e-5)
    np.testing.assert_allclose(src.grid.affine, affine, atol=1e-4)
    assert src.grid.sform_code == 1 and src.channel_count == 1


def test_a_series_written_by_gdcm_jpeg_lossless(tmp_path: Path) -> None:
    """A series written by another tool (ITK/GDCM through SimpleITK: its own attributes and file
    layout, JPEG Lossless Process 14), oblique: the voxels and the geometry GDCM was given."""
    vol = _volume(11)
    image = sitk.GetImageFromArray(vol.transpose(2, 1, 0))
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ OBLIQUE
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing([float(v) for v in spacing])
    image.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    image.SetOrigin([float(v) for v in lps[:3, 3]])
    d = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series, study = generate_uid(), generate_uid()
    # GDCM's writer leaves the process's LC_CTYPE at "C" (ASCII): put it back afterwards, so that
    # later tests in this process (torch.compile reads its templates in the locale's encoding) are
    # unaffected
    ctype = locale.setlocale(locale.LC_CTYPE)
    for k in np.random.default_rng(0).permutation(SHAPE[2]):
        plane = image[:, :, int(k)]
        position = image.TransformIndexToPhysicalPoint((0, 0, int(k)))
        for tag, value in (("0008|0060", "CT"), ("0020|000e", series), ("0020|000d", study),
                           ("0008|0016", "1.2.840.10008.5.1.4.1.1.2"), ("0020|0013", str(int(k) + 1)),
                           ("0020|0037", "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7]))),
                           ("0020|0032", "\\".join(str(v) for v in position))):
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / "gdcm" / f"slice{int(k) * 7 % 11}_{k}.dcm"))
        writer.SetUseCompression(True)
        writer.SetCompressor("JPEG")
        (tmp_path / "gdcm").mkdir(exist_ok=True)
        try:
            writer.Execute(plane)
        finally:
            locale.setlocale(locale.LC_CTYPE, ctype)
    assert pydicom.dcmread(next((tmp_path / "gdcm").iterdir())).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    src = _only(tmp_path / "gdcm")
    np.testing.assert_array_equal(src.read(full_window(SHAPE))[0], vol)
    np.testing.assert_allclose(src.grid.affine, OBLIQUE, atol=1e-6)


def test_files_without_the_preamble_and_an_enhanced_object(tmp_path: Path) -> None:
    vol = _volume(1)
    write_series(tmp_path / "bare", vol, OBLIQUE, preamble=False, slope=2.0, intercept=-1024.0)
    (tmp_path / "enhanced").mkdir()
    write_enhanced(tmp_path / "enhanced" / "ct.dcm", vol, OBLIQUE, slope=2.0, intercept=-1024.0)
    expected = vol * np.float32(2.0) - np.float32(1024.0)
    for folder in ("bare", "enhanced"):
        src = _only(tmp_path / folder)
        np.testing.assert_array_equal(src.read(full_window(SHAPE))[0], expected)
        np.testing.assert_allclose(src.grid.affine, OBLIQUE, atol=1e-4)
    assert all(r.frame is not None for r in _only(tmp_path / "enhanced").series.slices)


def test_a_slab_decodes_only_its_own_slices_and_the_staged_copy_equals_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    vol = _volume(2)
    write_series(tmp_path / "s", vol, AXIAL, syntax=RLELossless)
    src = _only(tmp_path / "s")
    decoded: list[str] = []
    real = dicom_source.decode_slice
    monkeypatch.setattr(dicom_source, "decode_slice", lambda ref, series: decoded.append(ref.path) or real(ref, series))
    window = Window((5, 7, 3), (20, 30, 4))
    np.testing.assert_array_equal(src.read(window)[0], vol[5:25, 7:37, 3:7])
    assert sorted(decoded) == sorted(str(r.path) for r in src.series.slices[3:7])
    staged = DicomSeriesSource.stage(src.path, tmp_path, SourceOptions())
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    copy = DicomSeriesSource(src.path, data_path=staged)
    np.testing.assert_array_equal(copy.read(window), src.read(window))
    np.testing.assert_array_equal(copy.read(full_window(SHAPE))[0], vol)


def test_a_folder_splits_into_series_and_lists_what_it_skips(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    study = generate_uid()
    write_series(archive / "p1" / "mixed", _volume(3), AXIAL, study_uid=study, seed=1)
    write_series(archive / "p1" / "mixed", _volume(4), OBLIQUE, study_uid=study, seed=2)
    write_series(archive / "p2", _volume(5), AXIAL, seed=3)
    write_text_report(archive / "p1" / "mixed" / "report")
    (archive / "p2" / "notes.dcm").write_text("not DICOM at all")
    items, messages = dicom_items([str(archive)])
    assert len(items) == 3 and all(i.error is None for i in items)
    names = sorted(i.name for i in items)
    assert names[2] == "p2" and all(n.startswith("p1_mixed_") for n in names[:2]) and len(set(names)) == 3
    assert any("report: skipped, not an image (SR" in m for m in messages)
    assert any("notes.dcm: skipped, not a DICOM file" in m for m in messages)
    for item in items:
        src = DicomSeriesSource(item.path)
        assert src.grid.shape == SHAPE and src.info["PatientID"] == "PHANTOM-1"
    empty, messages = dicom_items([str(tmp_path / "nothing-here")])
    assert empty[0].error and "no such folder" in empty[0].error
    (tmp_path / "scan.nii.gz").write_bytes(b"")
    a_file, _ = dicom_items([str(tmp_path / "scan.nii.gz")])
    assert a_file[0].error and "scan.nii.gz: is a file, not a folder of DICOM files" in a_file[0].error
    assert "inputs.format auto" in a_file[0].error


def test_images_without_a_series_uid_fail_as_one_item_beside_good_series(tmp_path: Path) -> None:
    """Once skipped as "not an image (CT, SOP class ...CT Image Storage)", which they are; a
    refused file path also broke the folder's listing."""
    archive = tmp_path / "archive"
    write_series(archive / "good", _volume(3), AXIAL, seed=1)
    write_series(archive / "nouid", _volume(4), AXIAL, seed=2)
    for path in (archive / "nouid").iterdir():
        ds = pydicom.dcmread(path)
        del ds.SeriesInstanceUID
        ds.save_as(path)
    items, _ = dicom_items([str(archive)])
    by_name = {i.name: i for i in items}
    assert set(by_name) == {"good", "nouid"} and by_name["good"].error is None
    error = by_name["nouid"].error or ""
    assert f"{archive / 'nouid'}: " in error and "CT image without SeriesInstanceUID" in error
    assert f"{len(list((archive / 'nouid').iterdir()))} file(s)" in error


def _edit(path: Path, **values: object) -> None:
    ds = pydicom.dcmread(path)
    for name, value in values.items():
        setattr(ds, name, value)
    ds.save_as(path)


def _refusal(tmp_path: Path, case: str) -> str:
    folder = tmp_path / case
    vol = _volume(6)
    if case == "tilt":
        write_series(folder, vol, sheared(AXIAL, 5.0))
        return "gantry tilt (slices are sheared by 5.00 degrees"
    paths = write_series(folder, vol, AXIAL)
    if case == "gap":
        paths[4].unlink()
        return "missing slices (a gap of 5.000 mm"
    if case == "duplicate":
        shutil.copy(paths[3], folder / "copy-of-3")
        _edit(folder / "copy-of-3", SOPInstanceUID=generate_uid())
        return "duplicate slice positions"
    if case == "orientation":
        _edit(paths[2], ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
        return "varying orientation"
    if case == "spacing":
        _edit(paths[2], PixelSpacing=[0.5, 0.5])
        return "varying pixel spacing"
    if case == "rows":
        ds = pydicom.dcmread(paths[2])
        ds.Rows = ds.Rows - 2
        ds.PixelData = ds.PixelData[: ds.Rows * ds.Columns * 2]
        ds.save_as(paths[2])
        return "varying rows/columns"
    if case == "single":
        for p in paths[1:]:
            p.unlink()
        return "a single slice, not a volume"
    if case == "slope 0":  # every voxel would be the intercept
        _edit(paths[3], RescaleSlope=0)
        return f"RescaleSlope 0 in {paths[3]}: every voxel would be the intercept"
    if case == "intercept inf":  # not a valid DS, as a broken exporter writes it
        with pytest.warns(UserWarning, match="Invalid value for VR DS"):
            _edit(paths[5], RescaleIntercept="inf")
        return f"RescaleIntercept inf in {paths[5]}: not a finite number"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["gap", "duplicate", "orientation", "spacing", "rows", "tilt", "single", "slope 0",
                                  "intercept inf"])
def test_a_series_that_is_not_one_clean_volume_is_refused_with_its_reason(tmp_path: Path, case: str) -> None:
    reason = _refusal(tmp_path, case)
    scan = scan_folder(str(tmp_path / case))
    assert not scan.series and len(scan.refused) == 1 and reason in scan.refused[0].reason
    items, _ = dicom_items([str(tmp_path / case)])
    assert len(items) == 1 and items[0].error is not None and reason in items[0].error
    assert items[0].error.startswith(items[0].path)  # names the series
    with pytest.raises(InputDataError, match="^" + str(tmp_path / case)):
        find_series(items[0].path)


def test_truncated_pixel_data_names_the_file(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "s", _volume(7), AXIAL)
    with open(paths[5], "r+b") as f:
        f.truncate(os.path.getsize(paths[5]) - 3000)
    src = _only(tmp_path / "s")
    with pytest.raises(SourceError, match=f"unreadable pixel data in {paths[5]}"):
        DicomSeriesSource.stage(src.path, tmp_path, SourceOptions())
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".npy", ".part")]


def test_the_fingerprint_follows_the_series_files(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "s", _volume(8), AXIAL)
    write_series(tmp_path / "s", _volume(9), OBLIQUE, seed=5)  # another series beside it
    scan = scan_folder(str(tmp_path / "s"))
    first, second = (s.path for s in scan.series)
    before = fingerprint(first), fingerprint(second)
    _edit(paths[0], SeriesDescription="edited")
    after = fingerprint(first), fingerprint(second)
    changed = [b != a for b, a in zip(before, after, strict=True)]
    assert sorted(changed) == [False, True]  # only the series that lost / changed a file
