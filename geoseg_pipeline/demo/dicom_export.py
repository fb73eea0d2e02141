"""DICOM series written with pydicom: a volume ``(i, j, k)`` and its RAS affine become one CT
(or MR, ...) image per slice, with the geometry every DICOM reader expects (see
:mod:`geoseg_pipeline.sources.dicom_series` for the convention). ``geoseg demo ct --dicom`` exports
its phantoms with it; the tests write their series with it (shuffled names, compressed transfer
syntaxes, files without the preamble)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def base_dataset(series_uid: str, study_uid: str, modality: str, sop_class: str,
                 frame_of_reference: str | None = None) -> Dataset:
    """The patient, study and series attributes every image of a series shares (a phantom patient)."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_of_reference or generate_uid()
    ds.Modality = modality
    ds.PatientID = "PHANTOM-1"
    ds.PatientName = "Phantom^One"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = "20240315"
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.AccessionNumber = "ACC0001"
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "geoseg tests"
    ds.SeriesDescription = "test series"
    ds.SeriesNumber = 3
    return ds


def file_meta(ds: Dataset, syntax: str) -> None:
    """Give ``ds`` its file meta information (Part 10) with the transfer syntax ``syntax``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta = meta


def set_pixels(ds: Dataset, plane: np.ndarray) -> None:
    """One greyscale 16-bit plane ``(rows, columns)`` as ``ds``'s pixel data."""
    ds.Rows, ds.Columns = plane.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if plane.dtype.kind == "i" else 0
    ds.PixelData = np.ascontiguousarray(plane).tobytes()


def ds_(values: Sequence[float]) -> list[DSfloat]:
    """Decimal strings of at most 16 characters, as scanners write them."""
    return [DSfloat(float(v), auto_format=True) for v in values]


def geometry(affine: np.ndarray) -> tuple[list[DSfloat], list[DSfloat], np.ndarray, np.ndarray]:
    """``(ImageOrientationPatient, PixelSpacing, first IPP, slice step)`` in LPS for a RAS affine."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    col_i, col_j = lps[:3, 0], lps[:3, 1]
    iop = [*(col_i / np.linalg.norm(col_i)), *(col_j / np.linalg.norm(col_j))]
    spacing = [float(np.linalg.norm(col_j)), float(np.linalg.norm(col_i))]  # row spacing, column spacing
    return ds_(iop), ds_(spacing), lps[:3, 3], lps[:3, 2]


def write_series(folder: Path, volume: np.ndarray, affine: np.ndarray, *, slope: float = 1.0, intercept: float = 0.0,
                 syntax: str = ExplicitVRLittleEndian, preamble: bool = True, modality: str = "CT",
                 series_uid: str | None = None, study_uid: str | None = None, seed: int = 0) -> list[Path]:
    """One file per slice of ``volume`` (stored values, int16/uint16 ``(i, j, k)``), written in a
    random order (``seed``) under random names, ``InstanceNumber`` against the position order
    (readers must sort by position); returns the paths by slice index."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    iop, spacing, origin, step = geometry(affine)
    frame_of_reference = generate_uid()
    order = np.random.default_rng(seed).permutation(volume.shape[2])
    paths: list[Path] = [folder] * volume.shape[2]
    for k in order:
        ds = base_dataset(series_uid, study_uid, modality, CT_IMAGE, frame_of_reference)
        ds.InstanceNumber = int(volume.shape[2] - k)
        ds.ImageOrientationPatient = iop
        ds.ImagePositionPatient = ds_(origin + k * step)
        ds.PixelSpacing = spacing
        ds.SliceThickness = DSfloat(float(np.linalg.norm(step)), auto_format=True)
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        set_pixels(ds, volume[:, :, k].T)  # rows run along j, columns along i
        path = folder / uuid.uuid4().hex
        if syntax != ExplicitVRLittleEndian:
            file_meta(ds, ExplicitVRLittleEndian)
            ds.compress(syntax, encoding_plugin="pylibjpeg" if "4.90" in syntax else "")
        else:
            file_meta(ds, syntax)
        if preamble:
            ds.save_as(path, enforce_file_format=True)
        else:
            del ds.file_meta
            pydicom.dcmwrite(path, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
        paths[k] = path
    return paths


__all__ = ["CT_IMAGE", "base_dataset", "ds_", "file_meta", "geometry", "set_pixels", "write_series"]
