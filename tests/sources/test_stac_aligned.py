"""Assets on a grid the output grid coarsens by an integer factor (Sentinel-2's 20 m and 60 m
bands under its 10 m ones) are read with GDAL's resampling on read (``AlignedRead``) only where
that equals GDAL warping the whole band, pixel for pixel: every window, at fractional source
offsets, at the asset's edges, beside nodata; and through the warper everywhere else (bilinear
among them: on a grid of inexact pixel size its ties round apart from the warper's)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import Resampling, reproject
from stac_files import Band, write_band

from geoseg_pipeline.geometry import Window
from geoseg_pipeline.sources.stac_items import AssetBand, StacItemRef
from geoseg_pipeline.sources.stac_source import AlignedRead, FastWarp, StacRasterSource

T10 = Affine(10, 0, 500000, 0, -10, 5200000)
SHAPE = (96, 130)


def _band(shape: tuple[int, int], dtype: str, seed: int, holes: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 250, shape).astype(dtype)
    if holes:  # nodata pixels in one corner: windows near them take the nodata-aware warp
        data[-4:-1, -5:-2] = 0
    return data[None]


def _windows(shape: tuple[int, int], seed: int) -> list[Window]:
    """Random windows (odd starts and sizes: fractional source offsets), the edges and corners."""
    rng = np.random.default_rng(seed)
    h, w = shape
    out = [Window((0, 0), shape), Window((h - 7, w - 9), (7, 9)), Window((0, w - 1), (h, 1)),
           Window((h - 1, 0), (1, w))]
    for _ in range(25):
        rh, rw = int(rng.integers(1, h)), int(rng.integers(1, w))
        out.append(Window((int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))), (rh, rw)))
    return out


def _whole(path: Path, resampling: str, dtype: str) -> np.ndarray:
    out = np.zeros(SHAPE, dtype)
    with rasterio.open(path) as ds:
        reproject(ds.read(1), out, src_transform=ds.transform, src_crs=ds.crs, dst_transform=T10, dst_crs=ds.crs,
                  resampling=Resampling[resampling], src_nodata=ds.nodata, dst_nodata=ds.nodata)
    return out


def _reader_kind(src: StacRasterSource, index: int) -> str:
    reader = src._readers[index]
    if isinstance(reader, FastWarp):
        reader = reader.fast
    return "aligned" if isinstance(reader, AlignedRead) else "warp"


CASES = [(r, k, d) for r, k, d in itertools.product(["nearest", "average", "bilinear", "cubic"], [1, 2, 3, 4, 6],
                                                     ["uint8", "uint16", "int16", "float32"])]


@pytest.mark.parametrize(("resampling", "factor", "dtype"), CASES, ids=["-".join(map(str, c)) for c in CASES])
@pytest.mark.parametrize("nodata", [None, 0], ids=["no-nodata", "nodata"])
def test_aligned_reads_equal_warping_the_whole_band(
    tmp_path: Path, resampling: str, factor: int, dtype: str, nodata: int | None,
) -> None:
    fine = write_band(tmp_path / "B04.tif", Band(_band(SHAPE, dtype, 1, False), T10, nodata=nodata))
    # the coarse asset starts 3 output pixels up and left of the grid (a fractional source offset
    # when the factor does not divide 3) and ends past it, so that it covers the grid
    rows, cols = (SHAPE[0] + 3) // factor + 1, (SHAPE[1] + 3) // factor + 1
    origin = T10 * (-3, -3)
    coarse_t = Affine(10 * factor, 0, origin[0], 0, -10 * factor, origin[1])
    coarse = write_band(tmp_path / "B11.tif", Band(_band((rows, cols), dtype, 2, nodata is not None), coarse_t,
                                                   nodata=nodata))
    ref = StacItemRef("it", "it.json", (AssetBand("B04", str(fine)), AssetBand("B11", str(coarse))),
                      resampling=resampling)
    src = StacRasterSource(ref)
    try:
        aligned = resampling in ("nearest", "average")  # bilinear's ties round apart (see below)
        # with nodata the nodata-aware warp is kept where nodata is near, except for nearest,
        # which copies a nodata pixel as any other (and float types have no nodata-free path)
        fast_warp_only = nodata is not None and resampling != "nearest" \
            and (dtype == "float32" or resampling == "cubic")
        assert _reader_kind(src, 1) == ("aligned" if aligned and not fast_warp_only else "warp")
        expected = _whole(coarse, resampling, dtype)
        near_nodata = 0
        for window in _windows(SHAPE, factor):
            got = src.read(window, [2])[0]
            assert np.array_equal(got, expected[window.slices()]), window
            near_nodata += bool((got == 0).any())
        assert nodata is None or near_nodata > 0  # some windows hold the nodata pixels
    finally:
        src.close()


def test_an_unaligned_or_rotated_asset_is_warped(tmp_path: Path) -> None:
    fine = write_band(tmp_path / "B04.tif", Band(_band(SHAPE, "uint16", 1, False), T10))
    half = Affine(20, 0, 500005, 0, -20, 5200000)  # half an output pixel off: no aligned read
    coarse = write_band(tmp_path / "B11.tif", Band(_band((50, 70), "uint16", 2, False), half))
    src = StacRasterSource(StacItemRef("it", "it.json", (AssetBand("B04", str(fine)), AssetBand("B11", str(coarse))),
                                       resampling="nearest"))
    try:
        assert _reader_kind(src, 1) == "warp"
    finally:
        src.close()


@pytest.mark.parametrize("nodata", [None, 0], ids=["no-nodata", "nodata"])
@pytest.mark.parametrize("pixel", [300.0, 300.0379266750948], ids=["300m", "landsat-rgb-byte"])
def test_bilinear_on_grids_where_gdal_rounds_ties_apart(tmp_path: Path, nodata: int | None, pixel: float) -> None:
    """Bilinear at factor 2 onto a 300 m grid, or onto RGB.byte.tif's 300.04 m one: GDAL's
    resampled read, and its nodata-free warp beside the nodata-aware one, round some of the x.5
    ties the other way (2.3 % and 0.003 % of the pixels of the real band, one apart). Every
    window equals warping the whole band all the same."""
    t = Affine(pixel, 0, 101985.0, 0, -pixel * 1.0000124, 2826915.0)
    fine = write_band(tmp_path / "B04.tif", Band(_band(SHAPE, "uint8", 1, False), t, nodata=nodata))
    rows, cols = SHAPE[0] // 2 + 1, SHAPE[1] // 2 + 1
    coarse_t = t * Affine.scale(2)
    coarse = write_band(tmp_path / "B11.tif", Band(_band((rows, cols), "uint8", 2, nodata is not None), coarse_t,
                                                   nodata=nodata))
    ref = StacItemRef("it", "it.json", (AssetBand("B04", str(fine)), AssetBand("B11", str(coarse))),
                      resampling="bilinear")
    expected = np.zeros(SHAPE, np.uint8)
    with rasterio.open(coarse) as ds:
        reproject(ds.read(1), expected, src_transform=coarse_t, src_crs=ds.crs, dst_transform=t, dst_crs=ds.crs,
                  resampling=Resampling.bilinear, src_nodata=nodata, dst_nodata=nodata)
        resampled = ds.read(1, window=rasterio.windows.Window(0, 0, SHAPE[1] / 2, SHAPE[0] / 2), out_shape=SHAPE,
                            resampling=Resampling.bilinear)
    assert (resampled != expected).sum() > 0  # what the aligned read would have given
    src = StacRasterSource(ref)
    try:
        assert _reader_kind(src, 1) == "warp" and not isinstance(src._readers[1], FastWarp)
        for window in _windows(SHAPE, 5):
            assert np.array_equal(src.read(window, [2])[0], expected[window.slices()]), window
    finally:
        src.close()
