"""A STAC item's assets brought onto one grid window by window: equal to GDAL warping each whole
band (every resampling, another CRS, the grid chosen by asset or pixel size), quality masks by
class value and by bit flag, scale and offset, and an asset that does not cover the grid."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import Resampling, reproject, transform_bounds
from stac_files import Band, write_band

from geoseg_pipeline.errors import InputDataError, SourceError
from geoseg_pipeline.geometry import Window, full_window
from geoseg_pipeline.sources.stac_items import AssetBand, QualityMask, StacItemRef
from geoseg_pipeline.sources.stac_source import StacRasterSource

T10 = Affine(10, 0, 500000, 0, -10, 5200000)
T20 = Affine(20, 0, 500000, 0, -20, 5200000)
T60 = Affine(60, 0, 500000, 0, -60, 5200000)
SHAPE = (90, 121)


def _smooth(shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(shape)
    return (1000 + 300 * np.sin(rows / 7.0) * np.cos(cols / 5.0) + rng.normal(0, 40, shape)).astype(np.uint16)[None]


def _tiled(src: StacRasterSource, step: tuple[int, int]) -> np.ndarray:
    h, w = src.grid.shape
    out = np.zeros((src.band_count, h, w), src.dtype)
    for r0 in range(0, h, step[0]):
        for c0 in range(0, w, step[1]):
            win = Window((r0, c0), (min(step[0], h - r0), min(step[1], w - c0)))
            out[(slice(None), *win.slices())] = src.read(win, list(range(1, src.band_count + 1)))
    return out


def _whole(path: Path, dst_transform: Affine, shape: tuple[int, int], resampling: Resampling, dst_crs: str,
           dtype: str = "uint16") -> np.ndarray:
    out = np.zeros(shape, dtype)
    with rasterio.open(path) as ds:
        reproject(ds.read(1), out, src_transform=ds.transform, src_crs=ds.crs, dst_transform=dst_transform,
                  dst_crs=dst_crs, resampling=resampling, src_nodata=ds.nodata, dst_nodata=ds.nodata)
    return out


def _holed(shape: tuple[int, int], seed: int, dtype: str) -> np.ndarray:
    """Smooth values with nodata (0) holes and a nodata edge: both warp paths get used."""
    data = _smooth(shape, seed).astype(dtype)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        r, c = int(rng.integers(0, shape[0] - 3)), int(rng.integers(0, shape[1] - 3))
        data[0, r:r + 3, c:c + 4] = 0
    data[0, :, -1] = 0
    return data


@pytest.mark.parametrize("resampling", ["bilinear", "nearest", "cubic", "average"])
@pytest.mark.parametrize("dtype", ["uint16", "int16", "uint8", "float32"])
def test_windows_equal_gdal_warping_the_whole_band(tmp_path: Path, resampling: str, dtype: str) -> None:
    b10 = write_band(tmp_path / "B04.tif", Band(_smooth(SHAPE, 1).astype(dtype), T10))
    b20 = write_band(tmp_path / "B11.tif", Band(_holed((45, 61), 2, dtype), T20))
    b60 = write_band(tmp_path / "B09.tif", Band(_holed((15, 21), 3, dtype), T60))
    ref = StacItemRef("it", "it.json", (AssetBand("B04", str(b10)), AssetBand("B11", str(b20)),
                                        AssetBand("B09", str(b60))), resampling=resampling)
    src = StacRasterSource(ref)
    try:
        assert src.grid.shape == SHAPE and src.grid.transform == T10
        whole = src.read(full_window(SHAPE), [1, 2, 3])
        for step in ((32, 32), (17, 40)):
            assert np.array_equal(_tiled(src, step), whole), step
    finally:
        src.close()
    with rasterio.open(b10) as ds:
        assert np.array_equal(whole[0], ds.read(1))
    for i, path in ((1, b20), (2, b60)):
        expected = _whole(path, T10, SHAPE, Resampling[resampling], "EPSG:32633", dtype)
        assert np.array_equal(whole[i], expected), (resampling, path.name)
        assert (expected == 0).any() and (expected != 0).mean() > 0.5  # nodata near some windows, not all


def test_grid_by_asset_and_by_pixel_size_and_another_crs(tmp_path: Path) -> None:
    b10 = write_band(tmp_path / "B04.tif", Band(_smooth(SHAPE, 1), T10))
    b20 = write_band(tmp_path / "B11.tif", Band(_smooth((45, 61), 2), T20))
    bands = (AssetBand("B04", str(b10)), AssetBand("B11", str(b20)))
    src = StacRasterSource(StacItemRef("it", "it.json", bands, grid="B11", resampling="average"))
    try:
        assert (src.grid.shape, src.grid.transform) == ((45, 61), T20)
        got = _tiled(src, (16, 16))
    finally:
        src.close()
    assert np.array_equal(got[0], _whole(b10, T20, (45, 61), Resampling.average, "EPSG:32633"))
    src = StacRasterSource(StacItemRef("it", "it.json", bands, grid=30.0))
    try:
        assert src.grid.shape == (30, 40) and src.grid.transform == Affine(30, 0, 500000, 0, -30, 5200000)
    finally:
        src.close()
    # an asset in another CRS (UTM 32N next door) is warped onto the item's grid
    utm = Affine(10, 0, 499300, 0, -10, 5201500)
    near = write_band(tmp_path / "near.tif", Band(_smooth((40, 50), 5), utm))
    west, south, east, north = transform_bounds("EPSG:32633", "EPSG:4326", 499300, 5201100, 499800, 5201500)
    lonlat = Affine(0.0002, 0, west - 0.002, 0, -0.0002, north + 0.002)
    size = (int((north - south + 0.004) / 0.0002) + 1, int((east - west + 0.004) / 0.0002) + 1)
    other = write_band(tmp_path / "B08.tif", Band(_smooth(size, 4), lonlat, crs="EPSG:4326"))
    src = StacRasterSource(StacItemRef("it", "it.json", (AssetBand("near", str(near)), AssetBand("B08", str(other)))))
    try:
        got = _tiled(src, (13, 19))
    finally:
        src.close()
    expected = _whole(other, utm, (40, 50), Resampling.bilinear, "EPSG:32633")
    assert np.array_equal(got[1], expected)


def test_quality_mask_by_values_and_by_bits(tmp_path: Path) -> None:
    b10 = write_band(tmp_path / "B04.tif", Band(_smooth(SHAPE, 1), T10))
    scl = np.full((1, 45, 61), 4, np.uint8)
    scl[0, 10:20, 5:30] = 9
    scl[0, 30:, 40:] = 3
    write_band(tmp_path / "SCL.tif", Band(scl, T20, nodata=None))
    qa = np.zeros((1, *SHAPE), np.uint16)
    qa[0, :, :10] = 1 << 3  # cloud
    qa[0, 50:60, :] = 1 << 4  # shadow
    qa[0, 70:, 70:] = 1 << 7  # water: not listed
    write_band(tmp_path / "QA.tif", Band(qa, T10, nodata=None))
    by_value = StacItemRef("it", "it.json", (AssetBand("B04", str(b10)),),
                           mask=QualityMask(AssetBand("SCL", str(tmp_path / "SCL.tif")), invalid=(3, 9)))
    src = StacRasterSource(by_value)
    try:
        assert src.nodata == 0.0 and src.dtype == np.uint16
        got = _tiled(src, (32, 32))[0]
    finally:
        src.close()
    scl10 = np.repeat(np.repeat(scl[0], 2, 0), 2, 1)[: SHAPE[0], : SHAPE[1]]
    assert np.array_equal(got == 0, np.isin(scl10, (3, 9)))
    by_bits = StacItemRef("it", "it.json", (AssetBand("B04", str(b10)),),
                          mask=QualityMask(AssetBand("QA", str(tmp_path / "QA.tif")), bits=(3, 4)))
    src = StacRasterSource(by_bits)
    try:
        got = src.read(full_window(SHAPE), [1])[0]
    finally:
        src.close()
    assert np.array_equal(got == 0, (qa[0] & 0b11000) != 0)


def test_scale_offset_and_a_mask_without_nodata(tmp_path: Path) -> None:
    data = _smooth(SHAPE, 1)
    data[0, :3] = 0
    b10 = write_band(tmp_path / "B04.tif", Band(data, T10))
    b20 = write_band(tmp_path / "B11.tif", Band(_smooth((45, 61), 2), T20, nodata=None))
    write_band(tmp_path / "SCL.tif", Band(np.full((1, 45, 61), 9, np.uint8), T20, nodata=None))
    bands = (AssetBand("B04", str(b10), scale=0.0001, offset=-0.1), AssetBand("B11", str(b20), scale=0.0001))
    src = StacRasterSource(StacItemRef("it", "it.json", bands, scale_offset=True))
    try:
        assert src.dtype == np.float32 and src.nodata is not None and math.isnan(src.nodata)
        got = src.read(full_window(SHAPE), [1])[0]
    finally:
        src.close()
    assert np.isnan(got[:3]).all()
    np.testing.assert_allclose(got[3:], data[0, 3:] * 0.0001 - 0.1, rtol=1e-6)
    # no nodata on the bands, a mask: float32 with NaN where masked
    src = StacRasterSource(StacItemRef("it", "it.json", bands[1:],
                                       mask=QualityMask(AssetBand("SCL", str(tmp_path / "SCL.tif")), invalid=(9,))))
    try:
        assert src.dtype == np.float32 and src.nodata is not None and math.isnan(src.nodata)
        assert np.isnan(src.read(Window((0, 0), (5, 5)), [1])).all()
    finally:
        src.close()


def test_assets_that_do_not_fit(tmp_path: Path) -> None:
    b10 = write_band(tmp_path / "B04.tif", Band(_smooth(SHAPE, 1), T10))
    small = write_band(tmp_path / "SCL.tif", Band(np.full((1, 20, 20), 4, np.uint8), T20, nodata=None))
    with pytest.raises(InputDataError, match=r"it.json: mask asset 'SCL' \(.*SCL.tif\) does not cover the output"):
        StacRasterSource(StacItemRef("it", "it.json", (AssetBand("B04", str(b10)),),
                                     mask=QualityMask(AssetBand("SCL", str(small)), invalid=(9,))))
    with pytest.raises(SourceError, match=r"asset 'B04' .* has 1 band\(s\), band 2 is listed"):
        StacRasterSource(StacItemRef("it", "it.json", (AssetBand("B04", str(b10), band=2),)))
    (tmp_path / "bad.tif").write_bytes(b"II*\0garbage")
    with pytest.raises(SourceError, match=r"it.json: asset 'B02': cannot open .*bad.tif"):
        StacRasterSource(StacItemRef("it", "it.json", (AssetBand("B04", str(b10)),
                                                        AssetBand("B02", str(tmp_path / "bad.tif")))))
    nocrs = tmp_path / "nocrs.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(nocrs, "w", driver="GTiff", width=5, height=5, count=1, dtype="uint8") as ds:
            ds.write(np.ones((1, 5, 5), np.uint8))
    with pytest.raises(InputDataError, match=r"asset 'X' .* has no CRS"):
        StacRasterSource(StacItemRef("it", "it.json", (AssetBand("X", str(nocrs)),)))
