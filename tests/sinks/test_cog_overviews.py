"""The COG sink's own nearest overviews: the levels GDAL's COG driver makes, the pixels it picks,
whatever order the blocks come in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.shutil import copy as rio_copy
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate

from geoseg_pipeline.geometry import Grid, Window
from geoseg_pipeline.sinks.cog import CogLabelSink, overview_factors, overview_pixels
from geoseg_pipeline.sinks.legend import ClassLegend, default_colours

LEGEND = ClassLegend(tuple(f"c{i}" for i in range(6)), default_colours(6))
TRANSFORM = from_origin(500000, 4600000, 10, 10)


def _sink_cog(tmp_path: Path, labels: np.ndarray, block: int, resampling: str = "nearest", seed: int = 0) -> Path:
    grid = Grid(labels.shape, TRANSFORM, "EPSG:32632")
    sink = CogLabelSink(tmp_path / "sink", grid, LEGEND, 255, overview_resampling=resampling)
    windows = [(r, c) for r in range(0, labels.shape[0], block) for c in range(0, labels.shape[1], block)]
    for i in np.random.default_rng(seed).permutation(len(windows)):  # any order
        r, c = windows[i]
        part = labels[r : r + block, c : c + block]
        sink.write(Window((r, c), part.shape), part)
    return sink.commit()


def _gdal_cog(tmp_path: Path, labels: np.ndarray, resampling: str = "NEAREST") -> Path:
    """The same map written whole to a GeoTIFF and copied by GDAL's COG driver, which makes the
    overviews itself."""
    plain, cog = tmp_path / "plain.tif", tmp_path / "gdal_cog.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=labels.shape[1], height=labels.shape[0], count=1,
                       dtype="uint8", nodata=255, crs="EPSG:32632", transform=TRANSFORM) as ds:
        ds.write(labels, 1)
    rio_copy(plain, cog, driver="COG", BLOCKSIZE="512", OVERVIEW_RESAMPLING=resampling)
    return cog


def _levels(path: Path) -> list[np.ndarray]:
    with rasterio.open(path) as ds:
        count = len(ds.overviews(1))
    out = []
    for level in range(count):
        with rasterio.open(path, OVERVIEW_LEVEL=level) as ov:
            out.append(ov.read(1))
    return out


@pytest.mark.parametrize("shape", [(512, 512), (513, 1000), (1313, 777), (4097, 300), (2048, 1024), (1025, 1025),
                                   (5000, 700), (1100, 1313), (3000, 3)])
def test_overviews_equal_gdals(tmp_path: Path, shape: tuple[int, int]) -> None:
    """The same levels, sizes and pixels as GDAL's COG driver makes from the whole map, whether
    or not the factors divide the map's sizes (then GDAL makes each level from the one before)."""
    labels = np.random.default_rng(sum(shape)).integers(0, 6, shape, dtype=np.uint8)
    labels[:100, :300] = 255
    ours = _sink_cog(tmp_path, labels, 384)  # blocks that do not line up with the factors
    theirs = _gdal_cog(tmp_path, labels)
    # rio-cogeo calls an overview one tile wide "not tiled", GDAL's own as well (2048 x 1024)
    assert cog_validate(str(ours), quiet=True) == cog_validate(str(theirs), quiet=True)
    assert len(overview_factors(*shape)) == len(_levels(theirs))  # rasterio reports 3000 x 3's as [3, 3, 3]
    got, want = _levels(ours), _levels(theirs)
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    with rasterio.open(ours) as ds:
        np.testing.assert_array_equal(ds.read(1), labels)


def test_overview_pixels_are_the_top_left_of_each_cell_where_the_factor_divides() -> None:
    assert [list(p[:3]) for p in overview_pixels(2048, (2, 4, 8))] == [[0, 2, 4], [0, 4, 8], [0, 8, 16]]
    thin = overview_pixels(3, (2, 4, 8))  # a side shorter than the factor keeps one pixel
    assert [p.tolist() for p in thin] == [[0], [0], [0]]


def test_mode_overviews_are_still_gdals(tmp_path: Path) -> None:
    labels = np.random.default_rng(5).integers(0, 6, (1024, 1024), dtype=np.uint8)
    ours = _sink_cog(tmp_path, labels, 256, resampling="mode")
    theirs = _gdal_cog(tmp_path, labels, "MODE")
    for g, w in zip(_levels(ours), _levels(theirs), strict=True):
        np.testing.assert_array_equal(g, w)


def test_the_legend_survives_the_vrt(tmp_path: Path) -> None:
    labels = np.random.default_rng(6).integers(0, 6, (1100, 700), dtype=np.uint8)
    ours = _sink_cog(tmp_path, labels, 512)
    with rasterio.open(ours) as ds:
        assert ds.colormap(1)[1] == (*(int(LEGEND.colours[1][i : i + 2], 16) for i in (1, 3, 5)), 255)
        assert ds.colormap(1)[255] == (0, 0, 0, 0)
        assert ds.tags()["GEOSEG_CLASSES"] == ",".join(LEGEND.names)
        assert ds.tags(1)["class_5"] == "c5"
        assert ds.descriptions == ("class",)
        assert ds.nodata == 255
        assert ds.transform == TRANSFORM
    assert sorted(p.name for p in ours.parent.iterdir()) == ["labels.tif", "labels.tif.aux.xml"]
