"""xarray datacubes as raster items, read window by window (``isel`` of each window; only the
chunks under it are read).

* :class:`XarrayZarrSource` (``format: xarray-zarr``): a Zarr store written by xarray
  (``Dataset.to_zarr``), opened with plain xarray without dask (``chunks=None``: the lazily
  indexed backend arrays read exactly the Zarr chunks a window covers, with none of dask's
  per-read graph). Its bands are the data variables on the ``(y, x)`` grid
  (:func:`~.xarray_grid.cube_bands`); ``inputs.variables`` picks and orders them. Values are
  read as stored (``mask_and_scale=False``): a ``_FillValue`` attribute is the nodata, like a
  GeoTIFF's, and no ``scale_factor`` is applied.
* :class:`DataArraySource` (``format: xarray``): a live ``xarray.DataArray`` of this process
  (numpy- or dask-backed), for :func:`geoseg_pipeline.predict_dataarray`. The array cannot be
  named in a workflow file, so it is registered under a random token (:func:`live_dataarray`)
  and a small handle file ``<name>.xarray`` holding the token stands for the item: discovery,
  the ledger and the driver see a file, the reader finds the array by the token. Only threads
  of the same process see the registry (``resources.backend: local``); a Ray actor opening the
  handle gets an error saying so.

Georeferencing, band naming and nodata follow :mod:`.xarray_grid`.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid
from collections.abc import Hashable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputDataError, ReadRequestError, SourceError
from ..geometry import Grid, Window
from ..storage import S3Config, zarr_open_kwargs
from ..storage.transient import open_error, read_error
from .base import SourceOptions, check_window, checked_indices
from .dask_chunks import ChunkCache, compute_array, registered_callbacks
from .xarray_grid import (
    X_DIMS,
    Y_DIMS,
    BandRef,
    band_labels,
    crs_of,
    cube_bands,
    grid_dims,
    import_xarray,
    nodata_of,
    select_bands,
    transform_of,
)

#: The suffix of a live DataArray's handle file.
HANDLE_SUFFIX = ".xarray"


class XarrayBandsSource:
    """Bands of xarray variables on one ``(y, x)`` grid; subclasses say where they come from."""

    def __init__(self, path: str, variables: Mapping[Hashable, Any], bands: Sequence[BandRef],
                 coords: Mapping[Hashable, Any], dims: tuple[str, str]) -> None:
        self.path = path
        self._variables = variables
        self._bands = tuple(bands)
        self._dims = dims
        first = variables[self._bands[0].variable]
        rows, cols = (int(first.sizes[d]) for d in dims)
        self._grid = Grid((rows, cols), transform_of(path, first, coords, dims), crs_of(path, first, coords))
        self._dtype = np.dtype(np.result_type(*(variables[k].dtype for k in dict.fromkeys(b.variable
                                                                                          for b in self._bands))))
        self._nodata = nodata_of(first)

    @property
    def grid(self) -> Grid:
        """Shape, transform and CRS from the coordinates and the grid mapping."""
        return self._grid

    @property
    def band_count(self) -> int:
        """Every band on the grid (``inputs.variables`` selects among them)."""
        return len(self._bands)

    @property
    def band_names(self) -> tuple[str, ...]:
        """The bands' names, in band order (see :func:`~.xarray_grid.cube_bands`)."""
        return tuple(b.name for b in self._bands)

    def select(self, names: Sequence[str]) -> tuple[int, ...]:
        """The 1-based bands ``names`` (``inputs.variables``) select, in that order.

        Raises:
            InputDataError: a name matches no band, naming the item and the bands it has.
        """
        return select_bands(self.path, self._bands, names)

    @property
    def dtype(self) -> np.dtype:
        """The bands' common type (each band is read as stored, then cast to it)."""
        return self._dtype

    @property
    def nodata(self) -> float | None:
        """The first band's nodata (see :func:`~.xarray_grid.nodata_of`)."""
        return self._nodata

    def read(self, window: Window, bands: Sequence[int]) -> np.ndarray:
        """Read ``bands`` (1-based) in ``window``, which must lie inside the grid: one ``isel``
        per run of requested bands of the same variable."""
        check_window(self.path, window, self._grid.shape)
        idx = checked_indices(self.path, bands, self.band_count, first=1, what="bands")
        rows, cols = window.slices()
        where = {self._dims[0]: rows, self._dims[1]: cols}
        out = np.empty((len(idx), *window.size), dtype=self._dtype)
        k = 0
        try:
            while k < len(idx):
                ref = self._bands[idx[k]]
                var = self._variables[ref.variable]
                if ref.index is None:
                    out[k] = self._values(var.isel(where))
                    k += 1
                    continue
                run = [ref.index]
                while k + len(run) < len(idx) and (nxt := self._bands[idx[k + len(run)]]).variable == ref.variable \
                        and nxt.index is not None:
                    run.append(nxt.index)
                # a contiguous run as a slice: basic indexing, no gather of the bands
                pick = slice(run[0], run[-1] + 1) if run == list(range(run[0], run[-1] + 1)) else run
                out[k:k + len(run)] = self._values(var.isel({var.dims[0]: pick, **where}))
                k += len(run)
        except (ReadRequestError, MemoryError):
            raise
        except Exception as exc:  # a dask graph or a Zarr store can raise anything
            raise read_error(f"{self.path}: cannot read window {window}: {exc}", exc, self.path) from exc
        return out

    def _values(self, selected: Any) -> np.ndarray:
        """The pixels of a selection of one variable."""
        return np.asarray(selected.values)

    def close(self) -> None:
        """Nothing to release (the subclasses close their datasets); may be called again."""


class XarrayZarrSource(XarrayBandsSource):
    """A Zarr datacube written by xarray (see the module's docstring)."""

    def __init__(self, path: str, s3: S3Config | None = None) -> None:
        xarray = import_xarray()
        try:
            ds = _open_cube(xarray, path, s3)
        except SourceError:
            raise
        except Exception as exc:  # zarr and xarray raise several unrelated types for a bad store
            raise open_error(f"{path}: cannot open as a Zarr datacube written by xarray: {exc}", exc, path) from exc
        self._ds = ds
        try:
            dims = _cube_dims(path, ds)
            super().__init__(path, ds.data_vars, cube_bands(path, ds.data_vars, dims), ds.coords, dims)
        except BaseException:
            ds.close()
            raise

    @classmethod
    def open(cls, path: str, options: SourceOptions) -> XarrayZarrSource:
        """The registry's way in (:mod:`geoseg_pipeline.formats`)."""
        return cls(path, options.s3)

    def close(self) -> None:
        """Close the dataset; may be called again."""
        self._ds.close()


def _open_cube(xarray: Any, path: str, s3: S3Config | None) -> Any:
    """The store as a dataset, through its consolidated metadata where it has them. Asked in
    two steps rather than with xarray's ``consolidated=None``, which warns about a store without
    them: nothing the user must act on, and a warning filter is not thread-safe."""
    kwargs = dict(engine="zarr", chunks=None, cache=False, mask_and_scale=False, decode_coords="all",
                  decode_times=False, **zarr_open_kwargs(path, s3))
    try:
        return xarray.open_dataset(path, consolidated=True, **kwargs)
    except ValueError:  # no consolidated metadata (Zarr v2 ".zmetadata", v3 in "zarr.json")
        return xarray.open_dataset(path, consolidated=False, **kwargs)


def _cube_dims(path: str, ds: Any) -> tuple[str, str]:
    """The cube's grid dimensions: the first of ``Y_DIMS`` and of ``X_DIMS`` it has.

    Raises:
        InputDataError: it has no row or no column dimension.
    """
    names = [str(d) for d in ds.sizes]
    y = next((n for n in Y_DIMS if n in names), None)
    x = next((n for n in X_DIMS if n in names), None)
    if y is None or x is None:
        raise InputDataError(f"{path}: the cube has dimensions {tuple(names)}: its grid needs rows and columns "
                             f"named one of {Y_DIMS} and {X_DIMS}")
    return y, x


# -- live DataArrays ----------------------------------------------------------------------------

_LIVE: dict[str, Any] = {}
_LIVE_LOCK = threading.Lock()


@contextlib.contextmanager
def live_dataarray(da: Any, folder: Path, name: str, spatial: int = 2) -> Iterator[Path]:
    """Register ``da`` for the length of the block; yields the handle file that names it
    (``folder/<name>.xarray``: the item's path, so the item is called ``name``). A dask-backed
    array gets a chunk cache over its last ``spatial`` dimensions (2: a raster, 3: a volume)."""
    token = uuid.uuid4().hex
    handle = folder / f"{name}{HANDLE_SUFFIX}"
    handle.write_text(json.dumps({"token": token, "pid": os.getpid(), "dims": [str(d) for d in da.dims],
                                  "shape": [int(n) for n in da.shape]}), encoding="utf-8")
    dasky = da.chunks is not None and hasattr(da.data, "blocks")
    # The caller's dask callbacks (a ProgressBar) as they are now, handed to each chunk
    # computation: computations left to find them in dask's global set would each empty and
    # restore that set, at once in the reading threads, and lose them (see dask_chunks).
    callbacks = registered_callbacks() if dasky else []
    cache = ChunkCache(da.data, spatial=spatial, callbacks=callbacks) if dasky else None
    with _LIVE_LOCK:
        _LIVE[token] = (da, cache if cache is not None and cache.cacheable() else None, callbacks)
    try:
        yield handle
    finally:
        with _LIVE_LOCK:
            _LIVE.pop(token, None)


class DataArraySource(XarrayBandsSource):
    """A live ``(band, y, x)`` (or ``(y, x)``) DataArray of this process (see the module's
    docstring); its bands are named by the band coordinate's labels."""

    def __init__(self, path: str, da: Any, cache: ChunkCache | None = None,
                 callbacks: Sequence[Any] = ()) -> None:
        if da.ndim not in (2, 3):
            raise InputDataError(f"{path}: expected a (band, y, x) or (y, x) DataArray, got dimensions "
                                 f"{tuple(map(str, da.dims))}: select or stack the others first (.isel, .stack)")
        dims = grid_dims(path, da.dims, "the DataArray")
        key = da.name if da.name is not None else "data"
        bands: tuple[BandRef, ...]
        if da.ndim == 2:
            bands = (BandRef(str(key), key),)
        else:
            bands = tuple(BandRef(label, key, i) for i, label in enumerate(band_labels(da, str(da.dims[0]))))
        super().__init__(path, {key: da}, bands, da.coords, dims)
        self._cache = cache
        self._callbacks = list(callbacks)

    def _values(self, selected: Any) -> np.ndarray:
        """A dask-backed selection computed with the caller's callbacks (see :func:`live_dataarray`)."""
        if selected.chunks is None:
            return np.asarray(selected.values)
        return np.asarray(compute_array(selected.data, self._callbacks))

    def read(self, window: Window, bands: Sequence[int]) -> np.ndarray:
        """Read ``bands`` (1-based) in ``window``: a dask array's through the chunk cache its
        registration made (:class:`~.dask_chunks.ChunkCache`), others with ``isel``."""
        if self._cache is None:
            return super().read(window, bands)
        check_window(self.path, window, self.grid.shape)
        idx = checked_indices(self.path, bands, self.band_count, first=1, what="bands")
        rows, cols = window.slices()
        try:
            block = self._cache.read(rows, cols)
        except MemoryError:
            raise
        except Exception as exc:  # a dask graph can raise anything
            raise read_error(f"{self.path}: cannot read window {window}: {exc}", exc, self.path) from exc
        if block.ndim == 2:
            block = block[None]
        picked = block if idx == list(range(block.shape[0])) else block[idx]
        return np.asarray(picked, dtype=self.dtype)

    @classmethod
    def open(cls, path: str, options: SourceOptions) -> DataArraySource:
        """The registry's way in: the array the handle file ``path`` names (:func:`live_array`)."""
        return cls(path, *live_array(path))


def live_array(path: str) -> tuple[Any, ChunkCache | None, list[Any]]:
    """The live DataArray the handle file ``path`` names, its chunk cache (``None``: not
    dask-backed, or chunks too large to keep) and the caller's dask callbacks.

    Raises:
        SourceError: the handle cannot be read, or its array lives in another process.
    """
    try:
        handle = json.loads(Path(path).read_text(encoding="utf-8"))
        token, pid = str(handle["token"]), int(handle["pid"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"{path}: not a DataArray handle written by predict_dataarray: {exc}") from exc
    with _LIVE_LOCK:
        live = _LIVE.get(token)
    if live is None:
        where = "another process" if pid != os.getpid() else "this process, and is no longer registered"
        raise SourceError(f"{path}: the DataArray it names lives in {where}: a live DataArray is read by "
                          "threads of the process that holds it (predict_dataarray, resources.backend: local), "
                          "not by Ray actors; write it to Zarr and use format: xarray-zarr to run it on Ray")
    da, cache, callbacks = live
    return da, cache, callbacks


__all__ = ["HANDLE_SUFFIX", "DataArraySource", "XarrayBandsSource", "XarrayZarrSource", "live_array", "live_dataarray"]
