"""xarray objects as rasters: which dimensions are the grid, which variables (or indices along a
band dimension) are the bands, and where the grid lies (CRS and transform), read from the
conventions rioxarray and odc-geo write, without either of them.

* **Grid dimensions**: the last two dimensions, ``(y, x)`` (or ``latitude, longitude`` /
  ``lat, lon``); any leading dimension is a band dimension.
* **CRS** (CF grid mapping, as ``rio.write_crs`` and odc-geo write it): the coordinate the
  variable's ``grid_mapping`` attribute names, else a ``spatial_ref`` coordinate, with a
  ``crs_wkt`` or ``spatial_ref`` attribute; else a ``crs`` attribute of the variable. None: no
  CRS (a pixel grid, as for a GeoTIFF without one).
* **Transform**: the grid mapping's ``GeoTransform`` (GDAL order ``c a b f d e``) when the x/y
  coordinates agree with it (or there are none), else one computed from regularly spaced x/y
  coordinates, which mark pixel centres (``x[0] - dx / 2`` is the left edge), as rioxarray does
  for a subset of a georeferenced array. Neither: the identity (pixel indices).

Everything here is a pure function of the object's coordinates and attributes: no pixels read.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine

from ..errors import InputDataError, SourceError
from .zarr_source import crs_wkt

#: Names of the grid's row and column dimensions (rioxarray's and odc-geo's).
Y_DIMS = ("y", "latitude", "lat")
X_DIMS = ("x", "longitude", "lon")

#: The optional extra that brings xarray, dask and rioxarray.
EXTRA_HINT = "pip install 'geoseg-pipeline[xarray]'"


def import_xarray() -> Any:
    """The ``xarray`` module, or a :class:`SourceError` naming the extra that installs it."""
    try:
        import xarray
    except ImportError as exc:
        raise SourceError(f"xarray datacubes need xarray: {EXTRA_HINT}") from exc
    return xarray


@dataclass(frozen=True)
class BandRef:
    """One band of a cube: a variable, and its index along the variable's band dimension
    (``None`` for a variable that is a single ``(y, x)`` band)."""

    name: str
    variable: Hashable
    index: int | None = None


def grid_dims(path: str, dims: Sequence[Hashable], what: str) -> tuple[str, str]:
    """The ``(y, x)`` dimension names: the last two of ``dims``.

    Raises:
        InputDataError: they are not a known row and column pair, naming what to do.
    """
    names = [str(d) for d in dims]
    if len(names) < 2 or names[-2] not in Y_DIMS or names[-1] not in X_DIMS:
        swapped = len(names) >= 2 and names[-2] in X_DIMS and names[-1] in Y_DIMS
        hint = (f"transpose it: .transpose(..., {names[-1]!r}, {names[-2]!r})" if swapped else
                f"its last two dimensions must be rows and columns named one of {Y_DIMS} and {X_DIMS}")
        raise InputDataError(f"{path}: {what} has dimensions {tuple(names)}: {hint}")
    return names[-2], names[-1]


def cube_bands(path: str, variables: Mapping[Hashable, Any], dims: tuple[str, str]) -> tuple[BandRef, ...]:
    """The bands of a Dataset's data variables on the grid ``dims``, in variable-name order (a
    Zarr store lists its arrays in no fixed order): a ``(y, x)`` variable is one band named by
    the variable; a ``(band, y, x)`` variable is one band per index, named ``variable:label`` by
    its band coordinate's labels (or the index when it has none). Other variables are left out.

    Raises:
        InputDataError: no variable lies on the grid.
    """
    found: list[BandRef] = []
    for key in sorted(variables, key=str):
        var = variables[key]
        vdims = tuple(str(d) for d in var.dims)
        if vdims == dims:
            found.append(BandRef(str(key), key))
        elif len(vdims) == 3 and vdims[1:] == dims:
            labels = band_labels(var, vdims[0])
            found.extend(BandRef(f"{key}:{label}", key, i) for i, label in enumerate(labels))
    if not found:
        raise InputDataError(f"{path}: no data variable on the {dims} grid; variables: "
                             + ", ".join(f"{k} {tuple(map(str, v.dims))}" for k, v in variables.items()))
    return tuple(found)


def band_labels(var: Any, dim: str) -> list[str]:
    """The labels of ``var``'s band dimension ``dim``: its coordinate's values, else indices."""
    if dim in var.coords:
        return [str(v) for v in np.asarray(var.coords[dim].values).tolist()]
    return [str(i) for i in range(int(var.sizes[dim]))]


def select_bands(path: str, bands: Sequence[BandRef], names: Sequence[str]) -> tuple[int, ...]:
    """The 1-based bands ``names`` select, in that order: a band's name, or a ``(band, y, x)``
    variable's name for all its bands.

    Raises:
        InputDataError: a name matches no band, naming the store and the bands it has.
    """
    picked: list[int] = []
    for name in names:
        hits = [i + 1 for i, b in enumerate(bands) if b.name == name or (b.index is not None and b.variable == name)]
        if not hits:
            raise InputDataError(f"{path}: inputs.variables names {name!r}, which is not a variable on the "
                                 f"cube's grid; it has: {', '.join(b.name for b in bands)}")
        picked.extend(hits)
    return tuple(picked)


def grid_mapping(var: Any, coords: Mapping[Hashable, Any]) -> Mapping[str, Any]:
    """The attributes of ``var``'s CF grid-mapping coordinate (empty when it has none)."""
    name = var.attrs.get("grid_mapping") or var.encoding.get("grid_mapping") or "spatial_ref"
    found = coords.get(name)
    return dict(found.attrs) if found is not None else {}


def crs_of(path: str, var: Any, coords: Mapping[Hashable, Any]) -> str | None:
    """The CRS as WKT (see the module's docstring), or ``None``.

    Raises:
        SourceError: an attribute that is not a CRS.
    """
    mapping = grid_mapping(var, coords)
    value = mapping.get("crs_wkt") or mapping.get("spatial_ref") or var.attrs.get("crs")
    return None if value is None else crs_wkt(path, value, "the grid mapping's CRS")


def transform_of(path: str, var: Any, coords: Mapping[Hashable, Any], dims: tuple[str, str]) -> Affine:
    """The grid's transform, pixel corners (see the module's docstring).

    Raises:
        InputDataError: irregular coordinates, or a one-pixel axis with no GeoTransform.
    """
    given = _geotransform(path, grid_mapping(var, coords).get("GeoTransform"))
    ys, xs = (np.asarray(coords[d].values, dtype=np.float64) if d in coords else None for d in dims)
    if ys is None or xs is None:
        return given if given is not None else Affine.identity()
    if given is not None and (given.b != 0 or given.d != 0 or _close(given, xs[0], ys[0])):
        return given  # exact, where the coordinates' float values would round
    dx = _step(path, xs, dims[1], given.a if given is not None else None)
    dy = _step(path, ys, dims[0], given.e if given is not None else None)
    return Affine(dx, 0.0, float(xs[0]) - dx / 2, 0.0, dy, float(ys[0]) - dy / 2)


def _geotransform(path: str, value: Any) -> Affine | None:
    if value is None:
        return None
    try:
        c, a, b, f, d, e = (float(v) for v in str(value).split())
    except ValueError as exc:
        raise SourceError(f"{path}: GeoTransform must be six numbers 'c a b f d e', got {value!r}") from exc
    return Affine(a, b, c, d, e, f)


def _close(t: Affine, x0: float, y0: float) -> bool:
    """Whether the first pixel centre lies where ``t`` puts it, within a millionth of a pixel."""
    x, y = t * (0.5, 0.5)
    return abs(x - x0) <= 1e-6 * abs(t.a) and abs(y - y0) <= 1e-6 * abs(t.e)


def _step(path: str, values: np.ndarray, dim: str, given: float | None) -> float:
    """The spacing of regularly spaced pixel centres (``given``, the GeoTransform's, when the
    coordinates cannot tell: a single pixel)."""
    if values.size < 2:
        if given is None:
            raise InputDataError(f"{path}: dimension {dim!r} has one pixel and no GeoTransform: its pixel size "
                                 "is unknown (write it with rio.write_transform)")
        return given
    step = (float(values[-1]) - float(values[0])) / (values.size - 1)
    if step == 0 or not math.isfinite(step) or not np.allclose(np.diff(values), step, rtol=1e-6, atol=0):
        raise InputDataError(f"{path}: coordinate {dim!r} is not regularly spaced: not a grid geoseg can write")
    return given if given is not None and math.isclose(given, step, rel_tol=1e-6) else step


def nodata_of(var: Any) -> float | None:
    """The nodata value: a ``_FillValue`` or ``nodata`` attribute (rioxarray's ``write_nodata``);
    else NaN for a float variable, xarray's mark of missing values (what ``open_zarr`` and
    ``open_dataset`` put where the store's ``_FillValue`` was, an attribute that ``to_dataarray``
    and most operations do not keep)."""
    for value in (var.attrs.get("_FillValue"), var.attrs.get("nodata")):
        if value is not None:
            return float(value)
    return math.nan if np.issubdtype(var.dtype, np.floating) else None


__all__ = ["EXTRA_HINT", "X_DIMS", "Y_DIMS", "BandRef", "band_labels", "crs_of", "cube_bands", "grid_dims",
           "grid_mapping", "import_xarray", "nodata_of", "select_bands", "transform_of"]
