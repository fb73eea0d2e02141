"""Read a label map (GeoTIFF or NIfTI) whole, check that two share one grid, and say how large
its pixels (voxels) are.

* **Rasters** (rasterio): band 1 of a one-band file. Pixels holding the file's nodata value
  (255 in geoseg's ``labels.tif``, 65535 above 255 classes) are invalid.
* **Volumes** (nibabel): the voxel array as stored (axes ``i, j, k``), a trailing axis of size 1
  dropped, after ``scl_slope``/``scl_inter``. NIfTI has no nodata: every voxel is valid.

Labels must be non-negative integers; a float file is accepted when every valid value is one.

Two label maps share a grid when their shapes agree and, for rasters, their CRS is the same and
their transforms put every pixel corner within :data:`TRANSFORM_TOLERANCE_PX` of a pixel of each
other (checked at the image's corners, where an affine difference is largest); for volumes their
affines agree to :data:`AFFINE_ATOL` (``numpy.allclose``, absolute).

:class:`Scale` is the physical size of the grid's elements, in the units the metrics report:

* volumes: voxel spacing = norms of the affine's columns (mm, as NIfTI world space is taken
  throughout this package); voxel volume ``|det(affine[:3, :3])|`` in mL;
* projected rasters: pixel spacing along rows and columns = norms of the transform's columns, in
  metres (the CRS's linear unit converted); pixel area ``|det(transform)|`` in m²;
* geographic rasters: distances in pixels; geodesic area of each row's pixels (m²);
* rasters without a CRS (or with a rotated geographic grid, or a CRS neither projected nor
  geographic): distances in pixels, no areas (as :func:`~geoseg_pipeline.statistics.pixel_areas`).

Distances between sheared axes are approximate: the surface distance scales each array axis by
its spacing, which is exact for orthogonal axes (every north-up raster, every NIfTI affine
without shear) only.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import rasterio
from affine import Affine
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError
from pyproj import CRS
from rasterio.crs import CRS as RioCRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from ..errors import InputDataError, SourceError, ignoring_warnings
from ..geometry import Grid
from ..sinks.nifti import SLICER_CTBL_NAME
from ..statistics import pixel_areas
from .pairs import VOLUME, label_kind

#: Largest distance, in pixels, between corresponding pixel corners of two "same" raster grids.
TRANSFORM_TOLERANCE_PX = 1e-3
#: Largest absolute difference between two "same" NIfTI affines.
AFFINE_ATOL = 1e-4

_IDENTITY = Affine.identity()


@dataclass(frozen=True)
class Scale:
    """How large a grid's elements are.

    Attributes:
        spacing: physical size of one step along each array axis (``None``: 1 per step, pixels).
        distance_unit: unit of distances: ``"mm"``, ``"m"`` or ``"px"``.
        size_unit: unit of class sizes: ``"mL"`` (volumes), ``"m2"`` (rasters with areas) or
            ``None`` (no CRS: counts only).
        element_size: size of one voxel (mL) or pixel (m²) when all are equal.
        row_sizes: area (m²) of one pixel of each row, when it varies by row (geographic CRS).
    """

    spacing: tuple[float, ...] | None
    distance_unit: str
    size_unit: str | None
    element_size: float | None = None
    row_sizes: np.ndarray | None = field(default=None, compare=False, repr=False)

    def size(self, mask: np.ndarray, count: int) -> float | None:
        """The size of the ``count`` true elements of ``mask`` (``None`` when sizes are unknown)."""
        if self.row_sizes is not None:
            return float(np.dot(np.count_nonzero(mask, axis=1), self.row_sizes))
        return None if self.element_size is None else count * self.element_size


@dataclass(frozen=True)
class LabelMap:
    """One label map read whole.

    Attributes:
        path: the file.
        kind: ``"raster"`` or ``"volume"``.
        labels: the label array, an unsigned integer type; ``(rows, cols)`` or ``(i, j, k)``.
        valid: where ``labels`` holds a label (``None``: everywhere).
        crs: raster CRS (``None`` for volumes and rasters without one).
        transform: raster transform (identity for volumes).
        affine: volume affine (``None`` for rasters).
    """

    path: Path
    kind: str
    labels: np.ndarray = field(repr=False, compare=False)
    valid: np.ndarray | None = field(repr=False, compare=False)
    crs: RioCRS | None = None
    transform: Affine = _IDENTITY
    affine: np.ndarray | None = field(default=None, compare=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return tuple(int(n) for n in self.labels.shape)


def read_label_map(path: Path) -> LabelMap:
    """Read ``path`` (by extension: NIfTI or anything rasterio opens).

    Raises:
        SourceError: the file cannot be opened or read.
        InputDataError: it is not a label map (several bands, 4D, non-integer or negative labels).
    """
    return _read_volume(path) if label_kind(path) == VOLUME else _read_raster(path)


def _read_raster(path: Path) -> LabelMap:
    try:
        with ignoring_warnings((NotGeoreferencedWarning, "")):  # a label map in pixels is fine
            ds = rasterio.open(path)
        with ds:
            if ds.count != 1:
                raise InputDataError(f"{path}: a label map has one band, this file has {ds.count}")
            data, nodata, crs, transform = ds.read(1), ds.nodata, ds.crs, ds.transform
    except RasterioError as exc:
        raise SourceError(f"{path}: cannot read as a raster: {exc}") from exc
    valid = None
    if nodata is not None:
        valid = ~np.isnan(data) if np.isnan(nodata) else data != nodata
        if valid.all():
            valid = None
    return LabelMap(path, "raster", _as_labels(path, data, valid), valid, crs or None, transform)


def _read_volume(path: Path) -> LabelMap:
    errors = (ImageFileError, HeaderDataError, OSError, EOFError, ValueError, zlib.error)
    try:
        image = nib.load(path)
    except errors as exc:
        raise SourceError(f"{path}: cannot read as NIfTI: {exc}") from exc
    if not isinstance(image, nib.Nifti1Image):  # Nifti2Image is a subclass
        raise SourceError(f"{path}: not a NIfTI-1/2 image")
    try:
        data = np.asanyarray(image.dataobj)
    except errors as exc:
        raise SourceError(f"{path}: cannot read the voxels: {exc}") from exc
    affine = np.array(image.affine, dtype=np.float64)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., np.newaxis]
    if data.ndim != 3:
        raise InputDataError(f"{path}: a label volume has three axes, this one has shape {data.shape}")
    return LabelMap(path, VOLUME, _as_labels(path, data, None), None, affine=affine)


def _as_labels(path: Path, data: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """``data`` as an unsigned integer array; invalid elements may hold anything."""
    if data.dtype == np.bool_:
        return data.view(np.uint8)
    if data.dtype.kind == "u":
        return data
    if data.dtype.kind not in "if":
        raise InputDataError(f"{path}: labels must be integers, the file holds {data.dtype}")
    values = data if valid is None else data[valid]
    if values.size == 0:
        return np.zeros(data.shape, np.uint8)
    if data.dtype.kind == "f" and not (np.all(np.isfinite(values)) and np.all(values == np.round(values))):
        raise InputDataError(f"{path}: labels must be integers, the file holds non-integer {data.dtype} values")
    low, high = values.min(), values.max()
    if low < 0:
        raise InputDataError(f"{path}: labels must be >= 0, found {low} (make it the file's nodata to ignore it)")
    target = np.min_scalar_type(int(high))
    out = np.zeros(data.shape, target) if valid is not None else None
    if out is None:
        return data.astype(target)
    out[valid] = values
    return out


def check_same_grid(pred: LabelMap, ref: LabelMap) -> None:
    """Raise unless ``pred`` and ``ref`` lie on the same grid (see the module doc).

    Raises:
        InputDataError: naming both files and both values.
    """
    if pred.kind != ref.kind:
        raise InputDataError(f"the prediction {pred.path} is a {pred.kind}, the reference {ref.path} a {ref.kind}")
    problem = _grid_problem(pred, ref)
    if problem is not None:
        what, pred_value, ref_value = problem
        raise InputDataError(
            f"{what}: the prediction {pred.path} has {pred_value}, the reference {ref.path} has {ref_value}; "
            f"the reference must lie on the input image's grid (resample it with nearest neighbour first)"
        )


def _grid_problem(pred: LabelMap, ref: LabelMap) -> tuple[str, str, str] | None:
    """``(what differs, prediction's value, reference's value)`` for the first grid property that differs."""
    if pred.shape != ref.shape:
        return "shape mismatch", f"shape {pred.shape}", f"shape {ref.shape}"
    if pred.affine is not None and ref.affine is not None:
        if np.allclose(pred.affine, ref.affine, rtol=0.0, atol=AFFINE_ATOL):
            return None
        worst = float(np.max(np.abs(pred.affine - ref.affine)))
        return (f"affine mismatch (differences up to {worst:.3g}, beyond {AFFINE_ATOL})", _matrix_text(pred.affine),
                _matrix_text(ref.affine))
    if pred.crs != ref.crs:
        return "CRS mismatch", _crs_text(pred.crs), _crs_text(ref.crs)
    if not _same_transform(pred.transform, ref.transform, pred.shape):
        return "transform mismatch", f"transform {tuple(pred.transform)[:6]}", f"transform {tuple(ref.transform)[:6]}"
    return None


def _matrix_text(matrix: np.ndarray) -> str:
    return str([[float(f"{v:.6g}") for v in row] for row in matrix.tolist()])


def _crs_text(crs: RioCRS | None) -> str:
    return "no CRS" if crs is None else f"CRS {crs.to_string()!r}"


def _same_transform(a: Affine, b: Affine, shape: tuple[int, ...]) -> bool:
    rows, cols = shape
    corners = [(0, 0), (cols, 0), (0, rows), (cols, rows)]
    pixel = min(_norm(a.a, a.d), _norm(a.b, a.e), _norm(b.a, b.d), _norm(b.b, b.e))
    return all(_norm(*(np.subtract(a @ c, b @ c))) <= TRANSFORM_TOLERANCE_PX * pixel for c in corners)


def _norm(x: float, y: float) -> float:
    return float(np.hypot(x, y))


def grid_scale(label_map: LabelMap) -> Scale:
    """The physical size of ``label_map``'s elements (see the module doc)."""
    if label_map.kind == VOLUME:
        assert label_map.affine is not None
        linear = label_map.affine[:3, :3]
        spacing = tuple(float(v) for v in np.linalg.norm(linear, axis=0))
        return Scale(spacing, "mm", "mL", abs(float(np.linalg.det(linear))) / 1000.0)
    t, crs = label_map.transform, label_map.crs
    rows, cols = label_map.shape
    areas = pixel_areas(Grid((rows, cols), t, crs.to_wkt() if crs else None))
    if crs is None or not areas.available:
        return Scale(None, "px", None)
    if areas.method == "geodesic":
        return Scale(None, "px", "m2", row_sizes=areas.row_area_m2)
    pcrs = CRS.from_user_input(crs.to_wkt())
    unit = pcrs.axis_info[0].unit_conversion_factor if pcrs.axis_info else 1.0
    spacing = (_norm(t.b, t.e) * unit, _norm(t.a, t.d) * unit)  # (rows, cols)
    assert areas.row_area_m2 is not None
    return Scale(spacing, "m", "m2", float(areas.row_area_m2[0]))


def prediction_class_names(path: Path) -> dict[int, str]:
    """Class names a geoseg label map carries: ``labels.tif``'s band tags ``class_<i>``, or the
    3D Slicer colour table next to a ``labels.nii.gz`` (spaces there are ``_``). Empty when none
    can be read."""
    names: dict[int, str] = {}
    try:
        if label_kind(path) == VOLUME:
            table = path.parent / SLICER_CTBL_NAME
            if table.is_file():
                for line in table.read_text(encoding="utf-8").splitlines():
                    parts = line.split()
                    if len(parts) >= 2 and not line.startswith("#") and parts[0].isdigit():
                        names[int(parts[0])] = parts[1]
        else:
            with ignoring_warnings((NotGeoreferencedWarning, "")), rasterio.open(path) as ds:
                tags = ds.tags(1)
            for key, value in tags.items():
                if key.startswith("class_") and key[6:].isdigit():
                    names[int(key[6:])] = value
    except (OSError, UnicodeDecodeError, RasterioError):
        return {}
    return names
