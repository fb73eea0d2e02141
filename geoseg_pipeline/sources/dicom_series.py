"""DICOM series: a folder's files grouped by ``SeriesInstanceUID``, each image series checked to
be one clean volume, its slices ordered along the slice normal and its affine computed.

An item is one series, named by a path of the form ``<folder>#series=<SeriesInstanceUID>``
(:func:`series_path`): the folder holding its files (searched recursively) and the series. Only
headers are read here (``stop_before_pixels``); pixels are read slice by slice by
:class:`~.dicom_source.DicomSeriesSource`.

Geometry, as dcm2niix and ITK read it: DICOM patient coordinates are LPS; column ``i`` of the
volume runs along the first ``ImageOrientationPatient`` vector (a row of the image) with the
second ``PixelSpacing`` value, ``j`` along the second vector (down the columns) with the first,
``k`` through the slices sorted by their position along the normal (row × column direction),
starting at the first slice's ``ImagePositionPatient``. The NIfTI affine maps ``(i, j, k)`` to
RAS+, so the LPS matrix's first two rows are negated.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import InputDataError, SourceError, first_line
from ..formats import SERIES_MARK
from .dicomweb import is_dicomweb

#: Storage classes that hold no image volume (listed and skipped): DICOMDIR, structured reports,
#: RT structure sets, plans and doses, presentation states, key objects, segmentations,
#: encapsulated documents, raw data, waveforms.
NON_IMAGE_PREFIXES = (
    "1.2.840.10008.1.3.10",  # Media Storage Directory (DICOMDIR)
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports, key object selection
    "1.2.840.10008.5.1.4.1.1.481.",  # RT objects (structure set, plan, dose, ...)
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, spatial registration, fiducials, segmentation
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF / CDA
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
)

#: Relative tolerance on slice spacing: a gap larger than this fraction of the median spacing
#: is a missing slice; positions closer than it are duplicates.
SPACING_TOLERANCE = 0.1

#: Largest angle (degrees) between the slice stacking direction and the normal before a series
#: is called tilted.
TILT_DEGREES = 0.5


@dataclass(frozen=True)
class SliceRef:
    """One slice of a series: its file, the frame in that file (multi-frame objects), its
    position along the normal, and its rescale (stored value × slope + intercept)."""

    path: str
    frame: int | None
    position: float
    slope: float = 1.0
    intercept: float = 0.0


@dataclass(frozen=True)
class DicomSeries:
    """One image series that is a clean volume: slices in order, the RAS affine, the shape
    ``(columns, rows, slices)``, and what reports show about it."""

    folder: str
    uid: str
    slices: tuple[SliceRef, ...]
    shape: tuple[int, int, int]
    affine: tuple[tuple[float, ...], ...]
    stored_dtype: str
    info: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def path(self) -> str:
        """The item's path (:func:`series_path`)."""
        return series_path(self.folder, self.uid)

    @property
    def affine_array(self) -> np.ndarray:
        """The 4 × 4 voxel-to-RAS affine."""
        return np.array(self.affine, dtype=np.float64)


@dataclass(frozen=True)
class Unusable:
    """A file or series that is not an item, and why (``skipped``: not an image, listed;
    otherwise a series refused with a reason)."""

    path: str
    reason: str
    skipped: bool = False


@dataclass
class FolderScan:
    """What a folder holds: clean series, series refused (with the reason), files skipped."""

    series: list[DicomSeries] = field(default_factory=list)
    refused: list[Unusable] = field(default_factory=list)
    skipped: list[Unusable] = field(default_factory=list)


def series_path(folder: str, uid: str) -> str:
    """``<folder>#series=<uid>``: the path of a series item."""
    return f"{folder.rstrip(os.sep) or os.sep}{SERIES_MARK}{uid}"


def is_series_path(path: str) -> bool:
    """Whether ``path`` names a DICOM series item."""
    return SERIES_MARK in path


def split_series_path(path: str) -> tuple[str, str]:
    """``(folder, uid)`` of a series item's path.

    Raises:
        SourceError: not a series path.
    """
    folder, mark, uid = path.rpartition(SERIES_MARK)
    if not mark or not folder or not uid:
        raise SourceError(f"{path}: not a DICOM series path (<folder>{SERIES_MARK}<SeriesInstanceUID>)")
    return folder, uid


# -- scanning ---------------------------------------------------------------------------------

_CACHE: OrderedDict[tuple[str, str], FolderScan] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 16


def _files(folder: str) -> list[tuple[str, int, int]]:
    out = []
    for dirpath, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            full = os.path.join(dirpath, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            out.append((full, st.st_size, st.st_mtime_ns))
    return out


def folder_fingerprint(files: Sequence[tuple[str, int, int]], root: str) -> str:
    """A digest of the files' relative paths, sizes and modification times."""
    digest = hashlib.sha256()
    for path, size, mtime in files:
        digest.update(f"{os.path.relpath(path, root)}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()[:32]


def scan_folder(folder: str) -> FolderScan:
    """Group the DICOM files under ``folder`` (recursively, any names, with or without the
    preamble) into series; headers only. Cached while the folder's files are unchanged.

    Raises:
        SourceError: the folder does not exist or cannot be listed.
    """
    if os.path.isfile(folder):
        raise SourceError(f"{folder}: is a file, not a folder of DICOM files: inputs.format dicom reads a series "
                          "from the folder that holds its files (give that folder; for a NIfTI or Zarr volume use "
                          "inputs.format auto)")
    if not os.path.isdir(folder):
        raise SourceError(f"{folder}: no such folder")
    require_pydicom()
    files = _files(folder)
    key = (os.path.abspath(folder), folder_fingerprint(files, folder))
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    scan = _scan(folder, files)
    with _CACHE_LOCK:
        _CACHE[key] = scan
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return scan


def series_fingerprint(path: str, dicomweb: Any = None) -> str:
    """The ledger's fingerprint of a series item: a digest of its files' names, sizes and
    modification times (so a changed, added or removed slice makes the series new).

    Raises:
        SourceError: the folder cannot be listed, or holds no such series.
    """
    if is_dicomweb(path):  # a PACS's series: its instance UIDs
        from . import dicomweb as web

        return web.series_fingerprint(path, web.required(path, dicomweb))
    folder, uid = split_series_path(path)
    listing = _files(folder)
    files = {p: (s, m) for p, s, m in listing}
    scan = scan_folder(folder)
    for s in scan.series:
        if s.uid == uid:
            members = sorted({ref.path for ref in s.slices})
            return "dicom:" + folder_fingerprint([(p, *files.get(p, (0, 0))) for p in members], folder)
    for bad in scan.refused:
        if bad.path == path:
            return "dicom-refused:" + folder_fingerprint(listing, folder)
    raise SourceError(f"{path}: no DICOM series {uid} under {folder}")


def find_series(path: str, dicomweb: Any = None) -> DicomSeries:
    """The series a series item's path names: a folder's (headers read from its files) or a
    DICOMweb server's (``dicomweb``: its configuration; headers from WADO-RS metadata).

    Raises:
        SourceError: no such folder or series; the server cannot be reached.
        InputDataError: the series is not one clean volume (the reason says why).
    """
    if is_dicomweb(path):
        return _web_series(path, dicomweb)
    folder, uid = split_series_path(path)
    scan = scan_folder(folder)
    for s in scan.series:
        if s.uid == uid:
            return s
    for bad in scan.refused:
        if bad.path == path:
            raise InputDataError(f"{path}: {bad.reason}")
    raise SourceError(f"{path}: no DICOM series {uid} under {folder}")


def require_pydicom() -> None:
    """Check that pydicom (the ``dicom`` extra) is installed.

    Raises:
        SourceError: it is not; the message gives the command that installs it.
    """
    try:
        import pydicom  # noqa: F401
    except ImportError as exc:
        raise SourceError("reading DICOM needs pydicom and its decoders: "
                          "pip install 'geoseg-pipeline[dicom]'") from exc


_WEB_CACHE: OrderedDict[str, DicomSeries] = OrderedDict()


def _web_series(path: str, dicomweb: Any) -> DicomSeries:
    """A DICOMweb series from its instances' metadata (cached by path in this process)."""
    from . import dicomweb as web

    with _CACHE_LOCK:
        if path in _WEB_CACHE:
            return _WEB_CACHE[path]
    require_pydicom()
    members = web.series_headers(path, web.required(path, dicomweb))
    folder, uid = split_series_path(path)
    try:
        series = _series(folder, uid, members)
    except InputDataError as exc:
        raise InputDataError(f"{path}: {exc}") from None
    with _CACHE_LOCK:
        _WEB_CACHE[path] = series
        while len(_WEB_CACHE) > _CACHE_SIZE:
            _WEB_CACHE.popitem(last=False)
    return series


def _read_header(path: str) -> Any:
    """The dataset of a file without its pixels, or ``None`` when it is not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        try:  # no preamble / DICM prefix: read as a bare data set, then check it is one
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:  # a file that is not DICOM at all
            return None
        if "SOPClassUID" not in ds:
            return None
    except Exception:  # pydicom raises many unrelated types (its own among them) for a damaged file
        return None
    return ds


def _first_line(exc: BaseException) -> str:
    return first_line(exc)[:300]


def _scan(folder: str, files: Sequence[tuple[str, int, int]]) -> FolderScan:
    scan = FolderScan()
    groups: dict[str, list[tuple[str, Any]]] = {}
    unplaced: dict[str, list[tuple[str, str]]] = {}
    for path, _, _ in files:
        ds = _read_header(path)
        if ds is None:
            scan.skipped.append(Unusable(path, "not a DICOM file", skipped=True))
            continue
        try:  # pydicom decodes values when they are read: a damaged element fails here, in many ways
            sop = str(ds.get("SOPClassUID", ""))
            image = bool(sop) and not sop.startswith(NON_IMAGE_PREFIXES)
            kind = str(ds.get("Modality", "")) or "object"
            lacks = [k for k in ("Rows", "SeriesInstanceUID") if k not in ds] if image else []
            uid = str(ds.SeriesInstanceUID) if image and not lacks else ""
        except Exception as exc:
            scan.refused.append(Unusable(path, f"{path}: damaged DICOM header: {_first_line(exc)}"))
            continue
        if not image:
            scan.skipped.append(Unusable(path, f"not an image ({kind}, SOP class {sop or 'missing'})", skipped=True))
            continue
        if lacks:  # an image without what places it in a series: refused (per folder), not skipped as no image
            unplaced.setdefault(os.path.dirname(path), []).append((path, f"{kind} image without {' or '.join(lacks)}"))
            continue
        groups.setdefault(uid, []).append((path, ds))
    for home, bad in unplaced.items():
        scan.refused.append(Unusable(home, f"{len(bad)} file(s) are a {bad[0][1]} (the first: {bad[0][0]}): they "
                                           "cannot be placed in a series"))
    for uid, members in groups.items():
        paths = [p for p, _ in members]
        home = os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else folder
        try:
            scan.series.append(_series(home, uid, members))
        except InputDataError as exc:
            scan.refused.append(Unusable(series_path(home, uid), str(exc)))
        except Exception as exc:  # a damaged element pydicom fails to decode (see above)
            scan.refused.append(Unusable(series_path(home, uid),
                                         f"{series_path(home, uid)}: damaged DICOM header: {_first_line(exc)}"))
    scan.series.sort(key=lambda s: s.path)
    return scan


# -- one series -------------------------------------------------------------------------------


def _rescale(name: str, value: Any, default: float, where: str) -> float:
    """``RescaleSlope`` or ``RescaleIntercept`` (``default`` where absent).

    Raises:
        InputDataError: not a finite number, or a slope of 0 (every voxel would be the intercept).
    """
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputDataError(f"{name} {value!r} in {where} is not a number") from None
    if not math.isfinite(number) or (name == "RescaleSlope" and number == 0):
        reason = "not a finite number" if not math.isfinite(number) else "every voxel would be the intercept"
        raise InputDataError(f"{name} {number:g} in {where}: {reason}; the stored pixels cannot be turned into values")
    return number


def _floats(ds: Any, name: str, count: int, where: str) -> np.ndarray:
    value = ds.get(name)
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.empty(0)
    if arr.size != count:
        raise InputDataError(f"{where}: {name} missing or not {count} numbers")
    return arr


def _info(ds: Any) -> dict[str, str]:
    names = ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "SeriesDescription", "Modality",
             "SeriesNumber", "FrameOfReferenceUID", "Manufacturer")
    return {n: str(ds.get(n, "") or "") for n in names}


def _planes(members: list[tuple[str, Any]]) -> Iterator[tuple[str, int | None, Any, Any]]:
    """``(path, frame, plane attributes, rescale attributes)`` of every slice: one per
    single-frame file, one per frame of an enhanced (multi-frame) object."""
    for path, ds in members:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        if per_frame is None:
            if frames > 1:
                raise InputDataError(f"{path}: a multi-frame object without per-frame positions "
                                     "(PerFrameFunctionalGroupsSequence)")
            yield path, None, ds, ds
            continue
        shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
        for f in range(frames):
            yield path, f, _FrameView(per_frame[f], shared), _FrameView(per_frame[f], shared)


class _FrameView:
    """A frame's geometry and rescale from an enhanced object's functional groups (per frame
    first, then shared), under the names a single-frame header uses."""

    _WHERE: ClassVar[dict[str, tuple[str, str]]] = {
        "ImagePositionPatient": ("PlanePositionSequence", "ImagePositionPatient"),
        "ImageOrientationPatient": ("PlaneOrientationSequence", "ImageOrientationPatient"),
        "PixelSpacing": ("PixelMeasuresSequence", "PixelSpacing"),
        "RescaleSlope": ("PixelValueTransformationSequence", "RescaleSlope"),
        "RescaleIntercept": ("PixelValueTransformationSequence", "RescaleIntercept"),
    }

    def __init__(self, frame: Any, shared: Any) -> None:
        self._groups = [g for g in (frame, shared) if g is not None]

    def get(self, name: str, default: Any = None) -> Any:
        seq_name, attr = self._WHERE[name]
        for group in self._groups:
            seq = group.get(seq_name)
            if seq and attr in seq[0]:
                return seq[0].get(attr)
        return default


def _series(folder: str, uid: str, members: list[tuple[str, Any]]) -> DicomSeries:
    """Check one series and compute its geometry.

    Raises:
        InputDataError: the series is not one clean volume (the message names the reason).
    """
    first_path, first = members[0]
    rows, cols = int(first.Rows), int(first.Columns)
    if int(first.get("SamplesPerPixel", 1) or 1) != 1:
        raise InputDataError(f"colour images (SamplesPerPixel {first.SamplesPerPixel}), "
                             "not a greyscale volume")
    for path, ds in members:
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise InputDataError(f"varying rows/columns ({rows}x{cols} in {first_path}, "
                                 f"{int(ds.Rows)}x{int(ds.Columns)} in {path})")
    planes = list(_planes(members))
    iop = _floats(planes[0][2], "ImageOrientationPatient", 6, first_path)
    spacing = _floats(planes[0][2], "PixelSpacing", 2, first_path)
    refs = []
    normal = np.cross(iop[:3], iop[3:])
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise InputDataError(f"ImageOrientationPatient {iop.tolist()} is not two orthogonal unit vectors")
    positions = []
    for path, frame, plane, rescale in planes:
        here = path if frame is None else f"{path} frame {frame + 1}"
        if not np.allclose(_floats(plane, "ImageOrientationPatient", 6, here), iop, atol=1e-4):
            raise InputDataError(f"varying orientation (ImageOrientationPatient differs in {here})")
        if not np.allclose(_floats(plane, "PixelSpacing", 2, here), spacing, rtol=1e-4):
            raise InputDataError(f"varying pixel spacing (PixelSpacing differs in {here})")
        ipp = _floats(plane, "ImagePositionPatient", 3, here)
        slope = _rescale("RescaleSlope", rescale.get("RescaleSlope"), 1.0, here)
        intercept = _rescale("RescaleIntercept", rescale.get("RescaleIntercept"), 0.0, here)
        positions.append(ipp)
        refs.append(SliceRef(path, frame, float(ipp @ normal), slope, intercept))
    if len(refs) < 2:
        raise InputDataError("a single slice, not a volume")
    order = np.argsort([r.position for r in refs], kind="stable")
    refs = [refs[i] for i in order]
    ipps = np.array([positions[i] for i in order])
    steps = np.diff([r.position for r in refs])
    median = float(np.median(steps))
    if median <= 0 or (steps < SPACING_TOLERANCE * max(median, 1e-6)).any():
        at = next(i for i, s in enumerate(steps) if s < SPACING_TOLERANCE * max(median, 1e-6))
        raise InputDataError(f"duplicate slice positions ({refs[at].path} and {refs[at + 1].path} at "
                             f"{refs[at].position:.3f} mm along the normal): several volumes in one series?")
    if (np.abs(steps - median) > SPACING_TOLERANCE * median).any():
        at = int(np.argmax(np.abs(steps - median)))
        what = "missing slices (a gap" if steps[at] > median else "irregular slice spacing (a step"
        raise InputDataError(f"{what} of {steps[at]:.3f} mm between positions "
                             f"{refs[at].position:.3f} and {refs[at + 1].position:.3f} mm, the median spacing is "
                             f"{median:.3f} mm)")
    step = (ipps[-1] - ipps[0]) / (len(refs) - 1)
    cos = float(abs(step @ normal) / np.linalg.norm(step))
    tilt = float(np.degrees(np.arccos(min(cos, 1.0))))
    if tilt > TILT_DEGREES:
        raise InputDataError(f"gantry tilt (slices are sheared by {tilt:.2f} degrees from the normal); "
                             "resample it onto an orthogonal grid first")
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * spacing[1]
    lps[:3, 1] = iop[3:] * spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = ipps[0]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    dtype = _stored_dtype(first, first_path)
    affine = tuple(tuple(float(v) for v in row) for row in ras)
    return DicomSeries(folder, uid, tuple(refs), (cols, rows, len(refs)), affine, dtype, _info(first))


def _stored_dtype(ds: Any, path: str) -> str:
    bits = int(ds.get("BitsAllocated", 16) or 16)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if bits not in (8, 16, 32):
        raise InputDataError(f"{path}: BitsAllocated {bits} (need 8, 16 or 32)")
    return f"{'i' if signed else 'u'}{bits // 8}"


__all__ = [
    "SERIES_MARK",
    "DicomSeries",
    "FolderScan",
    "SliceRef",
    "Unusable",
    "find_series",
    "is_series_path",
    "scan_folder",
    "series_fingerprint",
    "series_path",
    "split_series_path",
]
