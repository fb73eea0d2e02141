"""resources.gdal_cache_mb is GDAL's block cache in megabytes: a window read twice under the
job's environment is served from the cache the second time (the file's tiles are overwritten
on disk in between), so the cache holds blocks; ``GDAL_CACHEMAX=64`` handed to rasterio as it
stands would be 64 bytes and hold none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from geoseg_pipeline.storage import rasterio_env


def _tiled(path: Path) -> np.ndarray:
    data = np.arange(256 * 256, dtype=np.uint16).reshape(1, 256, 256) % 4000 + 1
    with rasterio.open(path, "w", driver="GTiff", width=256, height=256, count=1, dtype="uint16", tiled=True,
                       blockxsize=128, blockysize=128, crs="EPSG:32633", transform=from_origin(0, 0, 10, 10)) as ds:
        ds.write(data)
    return data


def _zero_tiles(path: Path) -> None:
    """Overwrite every tile's bytes on disk (uncompressed: they are the file's last 128 KiB)."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size - 4 * 128 * 128 * 2)
        f.write(b"\0" * (4 * 128 * 128 * 2))


def _twice(path: Path, **env: int) -> np.ndarray:
    with rasterio_env(None, **env), rasterio.open(path) as ds:
        first = ds.read(1, window=Window(0, 0, 200, 200))
        _zero_tiles(path)
        again: np.ndarray = ds.read(1, window=Window(0, 0, 200, 200))
        assert first.any()
        return again


def test_the_job_environment_keeps_blocks_in_the_cache(tmp_path: Path) -> None:
    data = _tiled(tmp_path / "cached.tif")
    np.testing.assert_array_equal(_twice(tmp_path / "cached.tif", gdal_cache_mb=8), data[0, :200, :200])


def test_a_cache_of_64_bytes_keeps_nothing(tmp_path: Path) -> None:
    """What GDAL_CACHEMAX=64 meant to rasterio, and so to every job before the fix."""
    _tiled(tmp_path / "uncached.tif")
    assert not _twice(tmp_path / "uncached.tif", GDAL_CACHEMAX=64).any()
