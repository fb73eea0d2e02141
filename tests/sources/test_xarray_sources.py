"""xarray datacubes as raster items: the readers run the shared source contract; georeferencing
agrees with rioxarray's; bad cubes are refused with their reason."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import dask
import dask.array
import numpy as np
import pytest
import rioxarray  # noqa: F401  (the .rio accessor: the reference for georeferencing)
import source_contract as contract
import xarray as xr
from affine import Affine
from pyproj import CRS

from geoseg_pipeline.errors import InputDataError, SourceError
from geoseg_pipeline.formats import lookup
from geoseg_pipeline.sources.base import SourceOptions, open_source
from geoseg_pipeline.sources.dask_chunks import ChunkCache
from geoseg_pipeline.sources.xarray_grid import crs_of, transform_of
from geoseg_pipeline.sources.xarray_source import DataArraySource, XarrayZarrSource, live_dataarray

RasterItem, positional = contract.RasterItem, contract.positional

SHAPE = (37, 53)
UTM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000100.0)
GEOGRAPHIC = Affine(0.25, 0.0, 10.0, 0.0, -0.125, 50.0)


def coords_for(transform: Affine, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Pixel-centre coordinates, as rioxarray writes them."""
    return {"y": transform.f + transform.e * (np.arange(shape[0]) + 0.5),
            "x": transform.c + transform.a * (np.arange(shape[1]) + 0.5)}


def write_cube(path: Path, variables: dict[str, tuple[tuple[str, ...], np.ndarray]], transform: Affine,
               crs: str, chunks: dict[str, int], *, geotransform: bool = False, extra: dict[str, Any] | None = None,
               zarr_format: int = 3) -> Path:
    """A Dataset written with ``to_zarr`` (the CRS by rioxarray), chunked on the grid."""
    shape = next(iter(variables.values()))[1].shape[-2:]
    ds = xr.Dataset({k: xr.DataArray(v, dims=d) for k, (d, v) in variables.items()},
                    coords={**coords_for(transform, shape), **(extra or {})})
    ds = ds.rio.write_crs(crs)
    if geotransform:
        ds = ds.rio.write_transform(transform)
    ds.chunk(chunks).to_zarr(path, mode="w", consolidated=False, zarr_format=zarr_format)
    return path


class TestXarrayZarrVariables(contract.RasterSourceContract):
    """(y, x) variables as bands, in name order; the transform from the x/y coordinates."""

    format_name = "xarray-zarr"
    reader = XarrayZarrSource
    detected = False  # a .zarr store is a plain Zarr array unless the workflow says xarray-zarr

    def write_item(self, folder: Path) -> RasterItem:
        data = positional((3, *SHAPE), np.int16)
        data[:, :5, :7] = -9999
        variables = {name: (("y", "x"), data[i]) for i, name in enumerate(["B02", "B03", "B04"])}
        variables["B03"] = (("y", "x"), data[1])
        path = write_cube(folder / "cube.zarr", {"B04": variables["B04"], "B02": variables["B02"],
                                                 "B03": variables["B03"],
                                                 "scl": (("y20", "x20"), np.zeros((19, 27), np.uint8))},
                          UTM, "EPSG:32633", {"y": 16, "x": 20})
        import zarr

        group = zarr.open_group(str(path), mode="r+")
        for name in ("B02", "B03", "B04"):
            group[name].attrs["_FillValue"] = -9999
        return RasterItem(path, data, UTM, "EPSG:32633", -9999.0)

    def test_band_names_and_selection(self, source: XarrayZarrSource) -> None:
        assert source.band_names == ("B02", "B03", "B04")  # scl lies on another grid
        assert source.select(["B04", "B03", "B02"]) == (3, 2, 1)
        with pytest.raises(InputDataError, match=r"cube\.zarr: inputs\.variables names 'B08'.*B02, B03, B04"):
            source.select(["B04", "B08"])


class TestXarrayZarrBandVariable(contract.RasterSourceContract):
    """One (band, y, x) variable; a geographic CRS and a GeoTransform (rio.write_transform)."""

    format_name = "xarray-zarr"
    reader = XarrayZarrSource
    detected = False

    def write_item(self, folder: Path) -> RasterItem:
        data = positional((4, *SHAPE), np.float32)
        variables = {"reflectance": (("band", "y", "x"), data)}
        path = write_cube(folder / "cube.zarr", variables, GEOGRAPHIC, "EPSG:4326", {"band": 2, "y": 16, "x": 20},
                          geotransform=True, extra={"band": ["red", "green", "blue", "nir"]},
                          zarr_format=2)  # Zarr v3 has no specified string type for the band labels
        # xarray gives float variables a NaN _FillValue when it writes them (CF): NaN is nodata
        return RasterItem(path, data, GEOGRAPHIC, "EPSG:4326", math.nan)

    def test_band_names(self, source: XarrayZarrSource) -> None:
        assert source.band_names == ("reflectance:red", "reflectance:green", "reflectance:blue", "reflectance:nir")
        assert source.select(["reflectance:nir", "reflectance:red"]) == (4, 1)
        assert source.select(["reflectance"]) == (1, 2, 3, 4)


class _LiveContract(contract.RasterSourceContract):
    """A live DataArray, registered for the class; its handle file is the item's path."""

    format_name = "xarray"
    detected = False  # only a job that names it (predict_dataarray) reads a live array
    reader = DataArraySource
    arrays: ClassVar[dict[str, Any]] = {}

    def make(self) -> Any:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def item(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RasterItem]:
        da, expected = cls().make()
        folder = tmp_path_factory.mktemp("live")
        with live_dataarray(da, folder, "scene") as handle:
            yield RasterItem(handle, expected, UTM, "EPSG:32633", 0.0)


class TestDataArrayNumpy(_LiveContract):
    def make(self) -> tuple[Any, np.ndarray]:
        data = positional((3, *SHAPE), np.uint16)
        da = xr.DataArray(data, dims=("band", "y", "x"), coords={"band": [1, 2, 3], **coords_for(UTM, SHAPE)})
        return da.rio.write_crs("EPSG:32633").rio.write_nodata(0), data


class TestDataArrayDask(_LiveContract):
    def make(self) -> tuple[Any, np.ndarray]:
        data = positional((3, *SHAPE), np.uint16)
        da = xr.DataArray(dask.array.from_array(data, chunks=(1, 16, 20)), dims=("band", "y", "x"),
                          coords=coords_for(UTM, SHAPE))
        return da.rio.write_crs("EPSG:32633").rio.write_nodata(0), data

    def test_band_names_are_indices_without_a_coordinate(self, source: DataArraySource) -> None:
        assert source.band_names == ("0", "1", "2")


# --- georeferencing as rioxarray reads it ------------------------------------------------------------


@pytest.mark.parametrize("crs", ["EPSG:32633", "EPSG:4326", "EPSG:3035"])
@pytest.mark.parametrize("geotransform", [False, True])
def test_crs_and_transform_agree_with_rioxarray(crs: str, geotransform: bool) -> None:
    transform = GEOGRAPHIC if crs == "EPSG:4326" else Affine(20.0, 0.0, 4321000.0, 0.0, -20.0, 3210000.0)
    da = xr.DataArray(np.zeros((2, *SHAPE), np.uint8), dims=("band", "y", "x"), coords=coords_for(transform, SHAPE))
    da = da.rio.write_crs(crs)
    if geotransform:
        da = da.rio.write_transform(transform)
    for view in (da, da.isel(y=slice(3, 30), x=slice(7, 50))):
        got = transform_of("t", view, view.coords, ("y", "x"))
        assert got.almost_equals(view.rio.transform(), precision=1e-9), (got, view.rio.transform())
        assert CRS.from_wkt(crs_of("t", view, view.coords)) == CRS.from_user_input(view.rio.crs)
    # south-up (rows of increasing y): rioxarray's transform keeps a negative y step there; ours
    # puts every pixel centre on its coordinate
    flipped = da.isel(y=slice(None, None, -1))
    got = transform_of("t", flipped, flipped.coords, ("y", "x"))
    rows = np.arange(SHAPE[0]) + 0.5
    np.testing.assert_allclose(got.f + got.e * rows, flipped.y.values, rtol=0, atol=1e-9 * abs(got.e))
    assert transform_of("t", da, da.coords, ("y", "x")) == transform  # exact on the whole grid


def test_no_coordinates_and_no_crs_is_a_pixel_grid() -> None:
    source = DataArraySource("t", xr.DataArray(np.zeros((2, 5, 6), np.uint8), dims=("band", "y", "x")))
    assert source.grid.transform == Affine.identity()
    assert source.grid.crs is None


# --- bad cubes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dims", "message"), [
    (("band", "x", "y"), r"dimensions \('band', 'x', 'y'\): transpose it"),
    (("band", "row", "col"), r"must be rows and columns named one of"),
    (("time", "band", "y", "x"), r"expected a \(band, y, x\) or \(y, x\) DataArray.*select or stack"),
])
def test_wrong_dimensions_are_refused(dims: tuple[str, ...], message: str) -> None:
    da = xr.DataArray(np.zeros((2,) * (len(dims) - 2) + (5, 6), np.uint8), dims=dims)
    with pytest.raises((InputDataError, SourceError), match=message):
        DataArraySource("cube", da)


def test_irregular_coordinates_are_refused() -> None:
    xs = np.array([0.5, 1.5, 2.5, 4.0, 5.5])
    da = xr.DataArray(np.zeros((1, 3, 5), np.uint8), dims=("band", "y", "x"), coords={"x": xs, "y": [2.5, 1.5, 0.5]})
    with pytest.raises(InputDataError, match="coordinate 'x' is not regularly spaced"):
        DataArraySource("cube", da)


def test_a_handle_whose_array_is_gone_says_where_it_lives(tmp_path: Path) -> None:
    da = xr.DataArray(np.zeros((1, 4, 4), np.uint8), dims=("band", "y", "x"))
    with live_dataarray(da, tmp_path, "gone") as handle:
        pass
    with pytest.raises(SourceError, match=r"no longer registered.*not by Ray actors.*format: xarray-zarr"):
        open_source(lookup("xarray", "raster"), str(handle))


def test_a_plain_zarr_reader_points_to_xarray_zarr(tmp_path: Path) -> None:
    path = write_cube(tmp_path / "cube.zarr", {"B04": (("y", "x"), np.zeros(SHAPE, np.int16))}, UTM, "EPSG:32633",
                      {"y": 16, "x": 20})
    with pytest.raises(SourceError, match=r"use inputs\.format: xarray-zarr"):
        open_source(lookup("zarr", "raster"), str(path))
    with contextlib.closing(open_source(lookup("xarray-zarr", "raster"), str(path), SourceOptions())) as src:
        assert src.band_count == 1


def test_a_cube_without_a_grid_is_refused(tmp_path: Path) -> None:
    xr.Dataset({"t": (("time",), np.arange(3))}).to_zarr(tmp_path / "series.zarr", consolidated=False)
    with pytest.raises(InputDataError, match=r"series\.zarr: the cube has dimensions \('time',\)"):
        open_source(lookup("xarray-zarr", "raster"), str(tmp_path / "series.zarr"))


# --- the chunk cache of dask-backed arrays -----------------------------------------------------------


@pytest.mark.parametrize("scheduler", [None, "threads"])  # the cache's own graph, or dask.compute
@pytest.mark.parametrize("budget_chunks", [1000, 5])
def test_chunk_cache_regions_equal_the_array_and_chunks_compute_once(budget_chunks: int, scheduler: str | None) -> None:
    data = positional((2, 90, 110), np.int32)
    computed: list[tuple[int, ...]] = []

    def chunk(block_info: Any = None) -> np.ndarray:
        computed.append(tuple(block_info[None]["chunk-location"]))
        (b, r, c) = block_info[None]["array-location"]
        return data[b[0]:b[1], r[0]:r[1], c[0]:c[1]]

    lazy = dask.array.map_blocks(chunk, chunks=((1, 1), (20,) * 4 + (10,), (25,) * 4 + (10,)), dtype=data.dtype,
                                 meta=np.empty((0, 0, 0), data.dtype))
    cache = ChunkCache(lazy, max_bytes=budget_chunks * 2 * 20 * 25 * 4)
    assert cache.cacheable() == (budget_chunks >= 4)
    rng = np.random.default_rng(0)
    with dask.config.set(scheduler=scheduler):
        for _ in range(60):
            r0, c0 = int(rng.integers(0, 89)), int(rng.integers(0, 109))
            rows, cols = slice(r0, int(rng.integers(r0 + 1, 91))), slice(c0, int(rng.integers(c0 + 1, 111)))
            np.testing.assert_array_equal(cache.read(rows, cols), data[:, rows, cols])
            assert cache._bytes <= cache.max_bytes
    if budget_chunks >= 25:  # every chunk kept: each computed once (both bands: one block per band chunk)
        assert sorted(computed) == sorted(set(computed))


def test_the_chunk_cache_computes_in_the_reading_thread_unless_told_otherwise() -> None:
    """Under dask's default scheduler the chunks are computed in the thread that reads (the
    engine's reading threads are the parallelism); a scheduler the caller sets is kept."""
    import threading

    where: list[int] = []

    def chunk(block_info: Any = None) -> np.ndarray:
        where.append(threading.get_ident())
        return np.ones((2, 10, 10), np.uint8)

    lazy = dask.array.map_blocks(chunk, chunks=((2,), (10, 10), (10, 10)), dtype=np.uint8,
                                 meta=np.empty((0, 0, 0), np.uint8))
    ChunkCache(lazy).read(slice(0, 20), slice(0, 20))
    assert set(where) == {threading.get_ident()}
    where.clear()
    with dask.config.set(scheduler="threads"):
        ChunkCache(lazy).read(slice(0, 20), slice(0, 20))
    assert where and threading.get_ident() not in where
