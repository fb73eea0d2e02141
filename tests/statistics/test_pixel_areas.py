"""Pixel areas (planar, geodesic, none) and per-class tallies of label blocks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from affine import Affine
from pyproj import Geod

from geoseg_pipeline.geometry import Grid, Window
from geoseg_pipeline.statistics import ClassTally, PixelAreas, pixel_areas

US_FOOT = 1200 / 3937  # metres per US survey foot
WGS84_AREA_M2 = 510_065_621.7e6  # 4 pi R_authalic^2


@pytest.mark.parametrize(
    ("transform", "area"),
    [
        (Affine(10, 0, 500000, 0, -10, 4000000), 100.0),
        (Affine(0.5, 0, 0, 0, 0.25, 0), 0.125),  # south-up
        (Affine(2, 1, 0, 0.5, -3, 0), 6.5),  # rotated and sheared: |2 * -3 - 1 * 0.5|
        (Affine.rotation(30) * Affine.scale(20, -20), 400.0),
    ],
)
def test_projected_area_is_the_determinant(transform: Affine, area: float) -> None:
    pa = pixel_areas(Grid((3, 4), transform, "EPSG:32633"))
    assert pa.method == "planar"
    assert pa.available
    assert pa.row_area_m2 is not None
    assert pa.row_area_m2.shape == (3,)
    np.testing.assert_allclose(pa.row_area_m2, area, rtol=1e-12)


def test_us_survey_feet_convert_to_square_metres() -> None:
    # NAD83 / New York Long Island (ftUS): 10 ft x 10 ft pixels.
    pa = pixel_areas(Grid((2, 2), Affine(10, 0, 1000000, 0, -10, 200000), "EPSG:2263"))
    assert pa.method == "planar"
    assert pa.row_area_m2 is not None
    np.testing.assert_allclose(pa.row_area_m2, 100 * US_FOOT**2, rtol=1e-12)
    assert "m²" in pa.note


def test_geographic_rows_are_geodesic_quadrilaterals() -> None:
    transform = Affine(0.25, 0, 10.0, 0, -0.5, 60.0)
    pa = pixel_areas(Grid((6, 3), transform, "EPSG:4326"))
    assert pa.method == "geodesic"
    assert "WGS 84" in pa.note
    assert pa.row_area_m2 is not None
    geod = Geod(ellps="WGS84")
    for r in range(6):
        top, bottom = 60.0 - 0.5 * r, 60.0 - 0.5 * (r + 1)
        area, _ = geod.polygon_area_perimeter([10.0, 10.25, 10.25, 10.0], [top, top, bottom, bottom])
        assert pa.row_area_m2[r] == pytest.approx(abs(area), rel=1e-12)
    assert np.all(np.diff(pa.row_area_m2) > 0)  # pixels grow towards the equator


def test_whole_globe_sums_to_the_wgs84_surface() -> None:
    grid = Grid((180, 360), Affine(1, 0, -180, 0, -1, 90), "EPSG:4326")
    pa = pixel_areas(grid)
    assert pa.row_area_m2 is not None
    total = float(pa.row_area_m2.sum()) * grid.width
    assert total == pytest.approx(WGS84_AREA_M2, rel=1e-6)
    np.testing.assert_allclose(pa.row_area_m2, pa.row_area_m2[::-1], rtol=1e-9)  # symmetric hemispheres


def test_no_crs_means_no_areas() -> None:
    pa = pixel_areas(Grid((4, 4)))
    assert pa.method == "none"
    assert pa.row_area_m2 is None
    assert not pa.available
    assert "no CRS" in pa.note


def test_rotated_geographic_grid_has_no_areas() -> None:
    pa = pixel_areas(Grid((4, 4), Affine(0.1, 0.01, 10, 0, -0.1, 50), "EPSG:4326"))
    assert pa.method == "none" and not pa.available
    assert "rotated geographic" in pa.note


LABELS = np.array(
    [
        [0, 0, 1, 2],
        [0, 1, 1, 2],
        [3, 3, 1, 2],
        [0, 0, 0, 2],
    ],
    dtype=np.uint8,
)


def test_tally_counts_and_planar_areas() -> None:
    areas = pixel_areas(Grid((4, 4), Affine(10, 0, 0, 0, -10, 0), "EPSG:32633"))
    tally = ClassTally(5, areas)
    valid = np.ones((4, 4), dtype=bool)
    valid[2, 0] = valid[3, 3] = False  # one pixel of class 3, one of class 2
    labels = LABELS.copy()
    labels[~valid] = 255
    tally.count(Window((0, 0), (4, 4)), labels, valid)
    stats = tally.result("scene", ["bare", "water", "trees", "crops", "snow"])
    assert stats.item == "scene"
    assert [c.pixels for c in stats.classes] == [6, 4, 3, 1, 0]
    assert [c.name for c in stats.classes] == ["bare", "water", "trees", "crops", "snow"]
    assert [c.index for c in stats.classes] == [0, 1, 2, 3, 4]
    assert [c.area_m2 for c in stats.classes] == [600.0, 400.0, 300.0, 100.0, 0.0]
    assert [c.area_ha for c in stats.classes] == [0.06, 0.04, 0.03, 0.01, 0.0]
    assert [c.share for c in stats.classes] == pytest.approx([6 / 14, 4 / 14, 3 / 14, 1 / 14, 0.0])
    assert stats.valid_pixels == 14
    assert stats.nodata_pixels == 2
    assert stats.valid_area_m2 == 1400.0
    assert stats.area_method == "planar"


def test_tally_uses_the_rows_of_the_block_on_the_grid() -> None:
    # Geographic grid: every row has another area, so shares of area differ from shares of pixels.
    grid = Grid((8, 4), Affine(1, 0, 0, 0, -10, 80), "EPSG:4326")
    areas = pixel_areas(grid)
    assert areas.row_area_m2 is not None
    row = areas.row_area_m2
    tally = ClassTally(4, areas)
    valid = np.ones((4, 4), dtype=bool)
    tally.count(Window((4, 0), (4, 4)), LABELS, valid)  # the lower half of the grid
    tally.count(Window((0, 0), (1, 4)), np.full((1, 4), 3, np.uint8), np.ones((1, 4), bool))  # top row
    stats = tally.result("scene", ["a", "b", "c", "d"])
    expected = np.zeros(4)
    for r in range(4):
        for c in range(4):
            expected[LABELS[r, c]] += row[4 + r]
    expected[3] += 4 * row[0]
    assert [c.pixels for c in stats.classes] == [6, 4, 4, 6]
    np.testing.assert_allclose([c.area_m2 for c in stats.classes], expected, rtol=1e-12)
    assert stats.valid_area_m2 == pytest.approx(expected.sum(), rel=1e-12)
    shares = [c.share for c in stats.classes]
    np.testing.assert_allclose(shares, expected / expected.sum(), rtol=1e-12)
    assert not np.allclose(shares, np.array([6, 4, 4, 6]) / 20)
    assert stats.nodata_pixels == 0


def test_tally_without_areas_shares_pixels() -> None:
    areas = pixel_areas(Grid((4, 4)))
    tally = ClassTally(4, areas)
    tally.count(Window((0, 0), (4, 4)), LABELS, np.ones((4, 4), bool))
    stats = tally.result("scene", ["a", "b", "c", "d"])
    assert [c.area_m2 for c in stats.classes] == [None] * 4
    assert [c.area_ha for c in stats.classes] == [None] * 4
    assert stats.valid_area_m2 is None
    assert [c.share for c in stats.classes] == [6 / 16, 4 / 16, 4 / 16, 2 / 16]
    assert stats.area_method == "none"
    assert "no CRS" in stats.area_note


def test_tally_of_nodata_only() -> None:
    tally = ClassTally(2, PixelAreas("none", None, "n/a"))
    tally.count(Window((0, 0), (3, 3)), np.full((3, 3), 255, np.uint8), np.zeros((3, 3), bool))
    stats = tally.result("empty", ["a", "b"])
    assert stats.valid_pixels == 0
    assert stats.nodata_pixels == 9
    assert [c.share for c in stats.classes] == [0.0, 0.0]
    assert all(math.isfinite(c.share) for c in stats.classes)
