"""Warped tiles shared by reading threads: the same pixels as the warped VRT, each tile warped
once whichever thread asks first, a bounded cache, released with its last user."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window as RioWindow
from stac_files import Band, write_band

from geoseg_pipeline.sources import warp_tiles
from geoseg_pipeline.sources.warp_tiles import SharedWarp

T10 = Affine(10, 0, 500000, 0, -10, 5200000)
SHAPE = (700, 1100)  # several tiles each way, partial ones at the edges


class _Counting:
    """A warped VRT that counts the pixels it warps."""

    def __init__(self, vrt: Any) -> None:
        self.vrt, self.height, self.width, self.pixels = vrt, vrt.height, vrt.width, 0

    def read(self, band: int, window: RioWindow) -> np.ndarray:
        out = np.asarray(self.vrt.read(band, window=window))
        self.pixels += out.size
        return out


def _vrt(ds: Any) -> WarpedVRT:
    return WarpedVRT(ds, crs=ds.crs, transform=T10, width=SHAPE[1], height=SHAPE[0], resampling=Resampling.bilinear,
                     src_nodata=0, nodata=0)


def _source(tmp_path: Path) -> Path:
    rng = np.random.default_rng(4)
    data = rng.integers(1, 3000, (1, SHAPE[0] // 2 + 1, SHAPE[1] // 2 + 1)).astype(np.uint16)
    data[0, 100:140, 200:260] = 0  # nodata: the warper's masked path
    return write_band(tmp_path / "B11.tif", Band(data, T10 * Affine.scale(2), nodata=0))


def test_tiles_equal_the_warp_and_are_warped_once(tmp_path: Path) -> None:
    path = _source(tmp_path)
    with rasterio.open(path) as ds1, rasterio.open(path) as ds2:
        whole = _vrt(ds1).read(1)
        a, b = _Counting(_vrt(ds1)), _Counting(_vrt(ds2))
        first, second = SharedWarp(a, "key"), SharedWarp(b, "key")
        rng = np.random.default_rng(5)
        for k in range(60):
            h, w = int(rng.integers(1, 400)), int(rng.integers(1, 600))
            r0, c0 = int(rng.integers(0, SHAPE[0] - h + 1)), int(rng.integers(0, SHAPE[1] - w + 1))
            got = (first if k % 2 else second).read(1, RioWindow(c0, r0, w, h))
            np.testing.assert_array_equal(got, whole[r0:r0 + h, c0:c0 + w])
        np.testing.assert_array_equal(first.read(1, RioWindow(0, 0, SHAPE[1], SHAPE[0])), whole)
        assert a.pixels + b.pixels == whole.size  # every tile warped once, by one of the two
        first.close()
        assert "key" in warp_tiles._SHARED  # still used by the second
        second.close()
        second.close()  # again: nothing
        assert "key" not in warp_tiles._SHARED


def test_the_cache_is_bounded_and_threads_share_tiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warp_tiles, "CACHE_BYTES", 3 * 256 * 512 * 2)  # three tiles of uint16
    path = _source(tmp_path)
    with rasterio.open(path) as ds:
        whole = _vrt(ds).read(1)
    counted: list[_Counting] = []
    failed: list[BaseException] = []
    both = threading.Barrier(2, timeout=20)

    def read(warp: SharedWarp) -> None:
        try:
            both.wait()
            for r0 in range(0, SHAPE[0], 100):
                got = warp.read(1, RioWindow(0, r0, SHAPE[1], min(150, SHAPE[0] - r0)))
                np.testing.assert_array_equal(got, whole[r0:r0 + 150])
        except BaseException as exc:  # asserted in the test's thread below
            failed.append(exc)

    with rasterio.open(path) as ds1, rasterio.open(path) as ds2:
        warps = []
        for ds in (ds1, ds2):
            counted.append(_Counting(_vrt(ds)))
            warps.append(SharedWarp(counted[-1], ("bounded", str(path))))
        threads = [threading.Thread(target=read, args=(w,)) for w in warps]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        tiles = warp_tiles._SHARED[("bounded", str(path))]
        assert 0 < tiles.bytes <= warp_tiles.CACHE_BYTES  # edge tiles are smaller: a few more may fit
        for warp in warps:
            warp.close()
    assert not failed, failed
    assert sum(c.pixels for c in counted) >= whole.size  # evicted tiles may be warped again
