"""One contract suite for every raster source backend, plus their errors and input discovery."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr
from affine import Affine
from pyproj import CRS

from geoseg_pipeline.errors import GeosegError, SourceError
from geoseg_pipeline.formats import detect
from geoseg_pipeline.geometry import Window, full_window
from geoseg_pipeline.sources import RasterioSource, RasterSource, ZarrRasterSource, open_raster_source
from geoseg_pipeline.sources.discovery import Item, expand_inputs, item_name

TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000100.0)
SHAPE = (37, 53)
BANDS = 4


def _pixels(dtype: str, nodata: float | None) -> np.ndarray:
    rng = np.random.default_rng(7)
    data = rng.integers(0, 120, (BANDS, *SHAPE)).astype(dtype)
    if nodata is not None:
        data[:, :5, :7] = nodata  # a nodata corner
    return data


def write_geotiff(path: Path, data: np.ndarray, nodata: float | None, crs: str | None = "EPSG:32633",
                  transform: Affine = TRANSFORM) -> Path:
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
        dtype=data.dtype, crs=crs, transform=transform, nodata=nodata, tiled=True,
        blockxsize=16, blockysize=16,
    ) as ds:
        ds.write(data)
    return path


def write_zarr(path: Path, data: np.ndarray, attrs: dict[str, object]) -> Path:
    arr = zarr.open_array(str(path), mode="w", shape=data.shape, chunks=(2, 16, 20)[-data.ndim:],
                          dtype=data.dtype)
    arr[...] = data
    arr.attrs.update(attrs)
    return path


@dataclass
class Case:
    path: Path
    data: np.ndarray
    nodata: float | None
    kind: type


WRITERS: dict[str, Callable[[Path, np.ndarray, float | None], tuple[Path, type]]] = {
    "geotiff": lambda d, data, nd: (write_geotiff(d / "scene.tif", data, nd), RasterioSource),
    "zarr": lambda d, data, nd: (
        write_zarr(d / "scene.zarr", data, {
            "crs": "EPSG:32633", "transform": list(TRANSFORM)[:6],
            **({} if nd is None else {"nodata": "nan" if math.isnan(nd) else nd}),
        }),
        ZarrRasterSource,
    ),
}


@pytest.fixture(
    params=[(b, dt, nd) for b in WRITERS for dt, nd in [("int16", -9999.0), ("float32", math.nan), ("uint8", None)]],
    ids=lambda p: f"{p[0]}-{p[1]}",
    scope="module",
)
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    backend, dtype, nodata = request.param
    data = _pixels(dtype, nodata)
    path, kind = WRITERS[backend](tmp_path_factory.mktemp(backend), data, nodata)
    return Case(path, data, nodata, kind)


@pytest.fixture
def source(case: Case) -> Iterator[RasterSource]:
    src = open_raster_source(str(case.path))
    yield src
    src.close()


# --- the contract ---------------------------------------------------------------------------------


def test_auto_detects_the_backend(case: Case, source: RasterSource) -> None:
    assert type(source) is case.kind
    assert isinstance(source, RasterSource)
    assert source.path == str(case.path)


def test_grid(source: RasterSource) -> None:
    grid = source.grid
    assert grid.shape == SHAPE
    assert (grid.height, grid.width) == SHAPE
    assert grid.transform == TRANSFORM
    assert grid.crs is not None
    assert CRS.from_user_input(grid.crs) == CRS.from_epsg(32633)


def test_band_count_dtype_nodata(case: Case, source: RasterSource) -> None:
    assert source.band_count == BANDS
    assert source.dtype == case.data.dtype
    if case.nodata is None:
        assert source.nodata is None
    elif math.isnan(case.nodata):
        assert source.nodata is not None and math.isnan(source.nodata)
    else:
        assert source.nodata == case.nodata
        assert isinstance(source.nodata, float)


WINDOWS = [
    Window((0, 0), SHAPE),
    Window((0, 0), (1, 1)),
    Window((36, 52), (1, 1)),
    Window((3, 5), (20, 31)),  # crosses tile / chunk borders
    Window((16, 16), (16, 16)),  # exactly one GeoTIFF tile
    Window((30, 0), (7, 53)),  # a strip at the bottom edge
]


@pytest.mark.parametrize("bands", [[1], [1, 2, 3, 4], [2, 3], [3, 1], [4, 2, 1], [2, 2]], ids=str)
def test_read_returns_the_stored_pixels(case: Case, source: RasterSource, bands: list[int]) -> None:
    for window in WINDOWS:
        got = source.read(window, bands)
        expected = case.data[(np.array(bands) - 1, *window.slices())]
        assert got.dtype == case.data.dtype
        assert got.shape == (len(bands), *window.size)
        np.testing.assert_array_equal(got, expected, err_msg=str(window))


def test_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.tif"
    with pytest.raises(SourceError, match="no such file or directory") as info:
        open_raster_source(str(path))
    assert str(path) in str(info.value)
    assert isinstance(info.value, OSError) and isinstance(info.value, GeosegError)


def test_missing_zarr_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.zarr"
    with pytest.raises(SourceError, match="no such file or directory") as info:
        open_raster_source(str(path))
    assert str(path) in str(info.value)


def test_text_file_named_tif(tmp_path: Path) -> None:
    path = tmp_path / "x.tif"
    path.write_text("not a raster\n", encoding="utf-8")
    with pytest.raises(SourceError, match="cannot open as a raster") as info:
        open_raster_source(str(path))
    assert str(path) in str(info.value)


def test_truncated_geotiff(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 255, (2, 256, 256), dtype=np.uint8)  # incompressible, so tiles fill the file
    path = write_geotiff(tmp_path / "cut.tif", data, None)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(int(size * 0.6))
    with pytest.raises(SourceError) as info:
        src = open_raster_source(str(path))
        for r in range(0, 256, 64):
            for c in range(0, 256, 64):
                src.read(Window((r, c), (64, 64)), [1, 2])
    assert isinstance(info.value, OSError)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("backend", ["geotiff", "zarr"])
def test_complex_pixels_are_refused(tmp_path: Path, backend: str) -> None:
    data = (np.arange(2 * 8 * 8).reshape(2, 8, 8) * (1 + 1j)).astype(np.complex64)
    if backend == "geotiff":
        path = write_geotiff(tmp_path / "c.tif", data, None)
    else:
        path = write_zarr(tmp_path / "c.zarr", data, {"crs": "EPSG:32633"})
    with pytest.raises(SourceError, match="unsupported pixel type complex64") as info:
        open_raster_source(str(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("attrs", "pattern"),
    [
        ({"transform": [1, 2, 3]}, "attribute transform must be 6 finite numbers"),
        ({"transform": "10 0 0 0 -10 0"}, "attribute transform must be 6 finite numbers"),
        ({"transform": [10, 0, 0, 0, "x", 0]}, "attribute transform must be 6 finite numbers"),
        ({"transform": [10, 0, 0, 0, -10, "nan"]}, "attribute transform must be 6 finite numbers"),
        ({"crs": "EPSG:99999999"}, "attribute crs is not a CRS"),
        ({"nodata": "none at all"}, "attribute nodata must be a number, got 'none at all'"),
    ],
    ids=str,
)
def test_zarr_bad_attributes(tmp_path: Path, attrs: dict[str, object], pattern: str) -> None:
    path = write_zarr(tmp_path / "bad.zarr", _pixels("uint8", None), attrs)
    with pytest.raises(SourceError, match=pattern) as info:
        open_raster_source(str(path))
    assert str(path) in str(info.value)


def test_zarr_wrong_rank(tmp_path: Path) -> None:
    path = write_zarr(tmp_path / "flat.zarr", np.arange(10, dtype=np.uint8), {})
    with pytest.raises(SourceError, match=r"expected a \(bands, rows, cols\) array, got shape \(10,\)"):
        open_raster_source(str(path))


def test_zarr_group_is_not_an_array(tmp_path: Path) -> None:
    path = tmp_path / "group.zarr"
    zarr.open_group(str(path), mode="w")
    with pytest.raises(SourceError, match="cannot open as a Zarr array") as info:
        open_raster_source(str(path))
    assert str(path) in str(info.value)


def test_zarr_single_band_and_defaults(tmp_path: Path) -> None:
    data = np.arange(6 * 9, dtype=np.uint16).reshape(6, 9)
    path = write_zarr(tmp_path / "one.zarr", data, {})
    src = open_raster_source(str(path))
    assert src.band_count == 1
    assert src.nodata is None
    assert src.grid.crs is None
    assert src.grid.transform == Affine.identity()
    np.testing.assert_array_equal(src.read(Window((1, 2), (3, 4)), [1]), data[None, 1:4, 2:6])


def test_zarr_nine_number_transform(tmp_path: Path) -> None:
    path = write_zarr(tmp_path / "t9.zarr", _pixels("uint8", None), {"transform": [*list(TRANSFORM)]})
    assert open_raster_source(str(path)).grid.transform == TRANSFORM


def test_format_detection(tmp_path: Path) -> None:
    data = _pixels("uint8", None)
    plain = write_zarr(tmp_path / "no_suffix", data, {})
    assert detect(str(plain), "raster").name == "zarr"
    assert type(open_raster_source(str(plain))) is ZarrRasterSource
    assert detect(str(tmp_path / "x.ZARR"), "raster").name == "zarr"
    assert detect(str(tmp_path / "x.tif"), "raster").name == "geotiff"
    assert detect(str(tmp_path / "x.vrt"), "raster").name == "geotiff"
    tif = write_geotiff(tmp_path / "x.tif", data, None)
    with pytest.raises(SourceError, match="cannot open as a Zarr array"):
        open_raster_source(str(tif), "zarr")


def test_geotiff_without_crs(tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "nocrs.tif", _pixels("uint8", None), None, crs=None)
    src = open_raster_source(str(path))
    assert src.grid.crs is None
    assert src.grid.transform == TRANSFORM


def test_whole_item_read_equals_full_window(case: Case, source: RasterSource) -> None:
    np.testing.assert_array_equal(source.read(full_window(SHAPE), range(1, BANDS + 1)), case.data)


# --- discovery ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("a/b.tif", "b"),
        ("/data/scene_01.TIF", "scene_01"),
        ("c.nii.gz", "c"),
        ("C.NII.GZ", "C"),
        ("m.zarr/", "m"),
        ("m.zarr", "m"),
        ("x/y.ome.zarr", "y"),
        ("s2.2024-06.tif", "s2.2024-06"),
        ("noext", "noext"),
        ("dir/.hidden", ".hidden"),
    ],
)
def test_item_name(path: str, name: str) -> None:
    assert item_name(path) == name


def _touch(*paths: Path) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def test_expand_globs_in_order_sorted(tmp_path: Path) -> None:
    _touch(tmp_path / "b.tif", tmp_path / "a.tif", tmp_path / "sub" / "deep" / "c.tif", tmp_path / "n.txt")
    items, unmatched = expand_inputs([str(tmp_path / "*.tif"), str(tmp_path / "**" / "c.tif")])
    assert unmatched == []
    assert items == [
        Item("a", str(tmp_path / "a.tif")),
        Item("b", str(tmp_path / "b.tif")),
        Item("c", str(tmp_path / "sub" / "deep" / "c.tif")),
    ]


def test_expand_reports_unmatched_patterns(tmp_path: Path) -> None:
    _touch(tmp_path / "a.tif")
    pattern = str(tmp_path / "*.jp2")
    other = str(tmp_path / "x" / "**" / "*.tif")
    items, unmatched = expand_inputs([pattern, str(tmp_path / "a.tif"), other])
    assert [i.name for i in items] == ["a"]
    assert unmatched == [f"{pattern}: matches no file", f"{other}: matches no file"]


def test_expand_deduplicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _touch(tmp_path / "a.tif", tmp_path / "b.tif")
    monkeypatch.chdir(tmp_path)
    items, unmatched = expand_inputs(
        [str(tmp_path / "a.tif"), "*.tif", "./a.tif", os.path.join("..", tmp_path.name, "b.tif"), "a.tif"]
    )
    assert unmatched == []
    assert items == [Item("a", str(tmp_path / "a.tif")), Item("b", "b.tif")]


def test_expand_keeps_missing_literal_paths(tmp_path: Path) -> None:
    missing = str(tmp_path / "gone.tif")
    items, unmatched = expand_inputs([missing, missing])
    assert items == [Item("gone", missing)]
    assert unmatched == []


def test_expand_matches_zarr_directories(tmp_path: Path) -> None:
    write_zarr(tmp_path / "m.zarr", _pixels("uint8", None), {})
    items, _ = expand_inputs([str(tmp_path / "*.zarr")])
    assert items == [Item("m", str(tmp_path / "m.zarr"))]


def test_a_stac_document_given_as_a_raster_says_to_name_its_assets(tmp_path: Path) -> None:
    item = tmp_path / "S2A_item.json"
    item.write_text('{"type": "Feature", "stac_version": "1.0.0", "id": "S2A_item", "assets": {}}', encoding="utf-8")
    with pytest.raises(SourceError, match=r"S2A_item\.json: cannot open as a raster: .*it is a STAC document: give "
                                          r"its assets in the model's channel order \(--assets"):
        RasterioSource(str(item))
    other = tmp_path / "notes.json"
    other.write_text('{"a": 1}', encoding="utf-8")
    with pytest.raises(SourceError) as info:
        RasterioSource(str(other))
    assert "STAC" not in str(info.value)


def test_a_geotiff_given_as_a_stac_document_says_so(write_raster: Callable[..., Path]) -> None:
    from geoseg_pipeline.sources.stac_items import _read_text

    scene = write_raster("scene.tif", np.ones((1, 8, 8), dtype="uint8"))
    with pytest.raises(SourceError, match=r"scene\.tif: is a GeoTIFF, not a STAC document: .*without --assets"):
        _read_text(str(scene), None)
