"""A live ``xarray.DataArray`` volume, ``(z, y, x)`` or ``(channel, z, y, x)``, as a volume item
(``format: xarray`` in a volume job; :func:`geoseg_pipeline.predict_dataarray` registers the
array and names it by a handle file, as for rasters: see :mod:`.xarray_source`).

Voxel geometry, in mm, as for a plain Zarr volume (:mod:`.zarr_volume`):

* the array's last three axes are the voxel axes ``i, j, k`` as stored, nothing reoriented;
* a 4x4 ``affine`` attribute (voxel index -> world mm, NIfTI's convention) is used as it is;
* otherwise each of the three dimensions needs a regularly spaced coordinate, the voxel centres
  in mm (a ``units`` attribute of ``m``, ``cm``, ``mm`` or ``um`` is converted): the step is the
  voxel size (negative: the axis runs backwards), the first value the first voxel's centre.
  Dimensions named ``x``, ``y`` and ``z`` map to world ``x``, ``y``, ``z`` (RAS+ in nibabel's
  terms, so a ``(z, y, x)`` array has axcodes ``('S', 'A', 'R')``); other names map in order.
  Without coordinates the voxel size is unknown and the array is refused, so that volumes are
  never silently counted in voxels.

Values are returned as float32, like every volume reader's.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from ..errors import InputDataError, ReadRequestError, SourceError
from ..geometry import Window
from ..storage.transient import read_error
from ..volumes import VolumeGrid
from .base import SourceOptions, check_volume_channel_axis, check_window, checked_indices
from .dask_chunks import ChunkCache, compute_array
from .xarray_source import live_array

#: A coordinate's ``units`` attribute, in mm.
_UNITS_MM = {"mm": 1.0, "millimeter": 1.0, "millimetre": 1.0, "cm": 10.0, "centimeter": 10.0, "m": 1000.0,
             "meter": 1000.0, "metre": 1000.0, "um": 1e-3, "µm": 1e-3, "micrometer": 1e-3}

#: Names of a volume's first voxel dimension (its depth): a DataArray of three or four dimensions
#: whose third-last is one of them is a volume, not a ``(band, y, x)`` raster or a time series.
Z_DIMS = ("z", "depth", "slice", "slices", "i")


def is_volume(dims: Sequence[Hashable]) -> bool:
    """Whether a DataArray with ``dims`` is a volume: ``(z, y, x)`` or ``(channel, z, y, x)``,
    told by the depth dimension's name (:data:`Z_DIMS`)."""
    return len(dims) in (3, 4) and str(dims[-3]).lower() in Z_DIMS


def volume_affine(path: str, da: Any) -> np.ndarray:
    """The voxel-to-world (mm) affine of a volume DataArray (see the module's docstring).

    Raises:
        InputDataError: a dimension without a coordinate, an irregular or one-voxel coordinate,
            an unknown unit, or an ``affine`` attribute that is not an invertible 4x4 matrix.
    """
    given = da.attrs.get("affine")
    if given is not None:
        try:
            return VolumeGrid((1, 1, 1), given).affine  # its checks: 4x4, finite, invertible
        except ValueError as exc:
            raise InputDataError(f"{path}: attribute 'affine' is not a usable voxel-to-world matrix: {exc}") from exc
    dims = [str(d) for d in da.dims[-3:]]
    names = [d.lower() for d in dims]
    world = [names.index(a) for a in "xyz"] if sorted(names) == ["x", "y", "z"] else [0, 1, 2]
    axis_of_world = {axis: w for w, axis in enumerate(world)}
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    for axis, dim in enumerate(dims):
        step, first = _axis(path, da, dim)
        w = axis_of_world[axis]
        affine[w, axis] = step
        affine[w, 3] = first
    return affine


def _axis(path: str, da: Any, dim: str) -> tuple[float, float]:
    """The voxel size and first voxel centre of dimension ``dim``, in mm."""
    if dim not in da.coords:
        raise InputDataError(f"{path}: dimension {dim!r} has no coordinate, so the voxel size is unknown: give "
                             f"voxel centres in mm (da.assign_coords({dim}=origin + spacing * np.arange(n))) "
                             "or a 4x4 attrs['affine']")
    coord = da.coords[dim]
    units = str(coord.attrs.get("units", "mm")).strip().lower()
    if units not in _UNITS_MM:
        raise InputDataError(f"{path}: coordinate {dim!r} has units {units!r}; known: {', '.join(_UNITS_MM)}")
    values = np.asarray(coord.values, dtype=np.float64) * _UNITS_MM[units]
    if values.size < 2:
        raise InputDataError(f"{path}: dimension {dim!r} has one voxel: its size is unknown; give a 4x4 "
                             "attrs['affine']")
    step = (float(values[-1]) - float(values[0])) / (values.size - 1)
    if step == 0 or not math.isfinite(step) or not np.allclose(np.diff(values), step, rtol=1e-6, atol=0):
        raise InputDataError(f"{path}: coordinate {dim!r} is not regularly spaced: not a voxel grid")
    return step, float(values[0])


class DataArrayVolumeSource:
    """A live volume DataArray of this process (see the module's docstring)."""

    def __init__(self, path: str, da: Any, cache: ChunkCache | None = None, callbacks: Sequence[Any] = ()) -> None:
        if da.ndim not in (3, 4):
            raise InputDataError(f"{path}: expected a (z, y, x) or (channel, z, y, x) DataArray, got dimensions "
                                 f"{tuple(map(str, da.dims))}")
        if np.dtype(da.dtype).kind not in "uif":
            raise SourceError(f"{path}: unsupported voxel type {da.dtype} (need real numbers)")
        self.path = path
        self._da = da
        self._cache = cache
        self._callbacks = list(callbacks)
        self._channels = int(da.shape[0]) if da.ndim == 4 else 1
        shape = tuple(int(n) for n in da.shape[-3:])
        affine = volume_affine(path, da)
        try:
            self._grid = VolumeGrid((shape[0], shape[1], shape[2]), affine)
        except ValueError as exc:
            raise InputDataError(f"{path}: unusable voxel geometry: {exc}") from exc

    @classmethod
    def open(cls, path: str, options: SourceOptions) -> DataArrayVolumeSource:
        """The registry's way in: the array the handle file ``path`` names; channels first."""
        check_volume_channel_axis(path, options.channel_axis, (None, 0))
        return cls(path, *live_array(path))

    @property
    def grid(self) -> VolumeGrid:
        """Shape ``(i, j, k)`` (the last three dimensions) and the affine."""
        return self._grid

    @property
    def channel_count(self) -> int:
        """Channels (1 for a ``(z, y, x)`` array)."""
        return self._channels

    @property
    def dtype(self) -> np.dtype:
        """Type of what :meth:`read` returns: always float32."""
        return np.dtype(np.float32)

    @property
    def ndim_effective(self) -> int:
        """Voxel axes longer than one voxel."""
        return sum(1 for n in self._grid.shape if n > 1)

    def read(self, window: Window, channels: Sequence[int] | None = None) -> np.ndarray:
        """Read ``channels`` (0-based; all when ``None``) in ``window``, which must lie inside the
        grid: a dask array's through its chunk cache, others by indexing.

        Returns:
            float32 ``(len(channels), i, j, k)``, C-contiguous.
        """
        check_window(self.path, window, self._grid.shape)
        chans = checked_indices(self.path, channels, self._channels, first=0, what="channels")
        region = window.slices()
        try:
            cached = self._cache
            if cached is not None:
                block = cached.read(*region)
            elif self._da.chunks is not None:  # dask-backed, chunks too large to keep
                block = np.asarray(compute_array(self._da.data[(..., *region)], self._callbacks))
            else:
                block = np.asarray(self._da.data[(..., *region)])
        except (ReadRequestError, MemoryError):
            raise
        except Exception as exc:  # a dask graph can raise anything
            raise read_error(f"{self.path}: cannot read window {window}: {exc}", exc, self.path) from exc
        if block.ndim == 3:
            return np.ascontiguousarray(np.broadcast_to(block.astype(np.float32, copy=False),
                                                        (len(chans), *block.shape)))
        picked = block if chans == list(range(block.shape[0])) else block[chans]
        return np.ascontiguousarray(picked, dtype=np.float32)

    def close(self) -> None:
        """Nothing to release (the array belongs to the caller); may be called again."""


__all__ = ["Z_DIMS", "DataArrayVolumeSource", "is_volume", "volume_affine"]
