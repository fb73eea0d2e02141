"""2D multiband Zarr arrays.

Convention (see ``docs/workflow.md``): the array has shape ``(bands, rows, cols)`` (or
``(rows, cols)`` for one band) and its attributes carry the georeferencing:

* ``crs``: anything ``pyproj.CRS.from_user_input`` accepts (``"EPSG:32633"``, WKT, PROJJSON);
* ``transform``: six numbers ``[a, b, c, d, e, f]`` in rasterio / affine order
  (``x = a*col + b*row + c``, ``y = d*col + e*row + f``);
* ``nodata``: optional number (or ``"nan"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr
from affine import Affine

from ..errors import SourceError
from ..geometry import Grid, Window
from ..storage import S3Config, zarr_open_kwargs
from ..storage.transient import read_error
from .base import SourceOptions, check_window, checked_indices


class ZarrRasterSource:
    """A Zarr array read by slicing, one window at a time."""

    def __init__(self, path: str, s3: S3Config | None = None) -> None:
        self.path = path
        try:
            arr = zarr.open_array(path, mode="r", **zarr_open_kwargs(path, s3))
        except SourceError:
            raise
        except Exception as exc:  # zarr raises several unrelated types for a bad store
            raise SourceError(f"{path}: cannot open as a Zarr array: {exc} (a datacube written by xarray? "
                              "use inputs.format: xarray-zarr)") from exc
        if arr.ndim not in (2, 3):
            raise SourceError(f"{path}: expected a (bands, rows, cols) array, got shape {arr.shape}")
        self._arr = arr
        self._bands_axis = arr.ndim == 3
        attrs: dict[str, Any] = dict(arr.attrs)
        rows, cols = (int(n) for n in arr.shape[-2:])
        self._grid = Grid((rows, cols), _transform(path, attrs), _crs(path, attrs))
        nodata = attrs.get("nodata")
        try:
            self._nodata = None if nodata is None else float(nodata)
        except (TypeError, ValueError) as exc:
            raise SourceError(f"{path}: attribute nodata must be a number, got {nodata!r}") from exc

    @classmethod
    def open(cls, path: str, options: SourceOptions) -> ZarrRasterSource:
        """The registry's way in (:mod:`geoseg_pipeline.formats`)."""
        return cls(path, options.s3)

    @property
    def grid(self) -> Grid:
        """Shape, transform and CRS from the array's attributes."""
        return self._grid

    @property
    def band_count(self) -> int:
        """Number of bands (1 for a 2D array)."""
        return int(self._arr.shape[0]) if self._bands_axis else 1

    @property
    def dtype(self) -> np.dtype:
        """Stored element type."""
        return np.dtype(self._arr.dtype)

    @property
    def nodata(self) -> float | None:
        """Nodata from the ``nodata`` attribute."""
        return self._nodata

    def read(self, window: Window, bands: Sequence[int]) -> np.ndarray:
        """Read ``bands`` (1-based) in ``window``, which must lie inside the grid."""
        check_window(self.path, window, self._grid.shape)
        idx = checked_indices(self.path, bands, self.band_count, first=1, what="bands")
        rows, cols = window.slices()
        try:
            if not self._bands_axis:
                return np.asarray(self._arr[rows, cols])[None, ...].repeat(len(idx), axis=0)
            if idx == list(range(idx[0], idx[-1] + 1)):
                return np.asarray(self._arr[idx[0] : idx[-1] + 1, rows, cols])
            return np.stack([np.asarray(self._arr[i, rows, cols]) for i in idx])
        except Exception as exc:
            raise read_error(f"{self.path}: cannot read window {window}: {exc}", exc, self.path) from exc

    def close(self) -> None:
        """Zarr arrays hold no open handles; may be called again."""


def _transform(path: str, attrs: dict[str, Any]) -> Affine:
    value = attrs.get("transform")
    if value is None:
        return Affine.identity()
    if not isinstance(value, list | tuple) or len(value) not in (6, 9) or not all(
        isinstance(v, int | float) and math.isfinite(v) for v in value
    ):
        raise SourceError(f"{path}: attribute transform must be 6 finite numbers [a, b, c, d, e, f], got {value!r}")
    return Affine(*[float(v) for v in value[:6]])


def _crs(path: str, attrs: dict[str, Any]) -> str | None:
    value = attrs.get("crs")
    return None if value is None else crs_wkt(path, value, "attribute crs")


def crs_wkt(path: str, value: Any, what: str) -> str:
    """``value`` (anything ``pyproj.CRS.from_user_input`` reads) as WKT.

    Raises:
        SourceError: it is not a CRS, naming the item and ``what`` held it.
    """
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        return str(CRS.from_user_input(value).to_wkt())
    except CRSError as exc:
        raise SourceError(f"{path}: {what} is not a CRS: {exc}") from exc
