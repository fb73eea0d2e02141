"""Land-cover pages: quicklooks from a COG's overviews (never its full resolution when an overview
fits), the legend's colours, class tables, zones, failed items, the change matrix; offline pages."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import CRS

from geoseg_pipeline.change import change_maps
from geoseg_pipeline.geometry import Grid, Window
from geoseg_pipeline.report import ItemOutcome
from geoseg_pipeline.report import landcover as pages
from geoseg_pipeline.report.png import png_rgb
from geoseg_pipeline.sinks.cog import CogLabelSink
from geoseg_pipeline.sinks.legend import ClassLegend
from geoseg_pipeline.statistics import ClassStats, ItemStats, ZoneStats

LEGEND = ClassLegend(("water", "trees", "built"), ("#0000ff", "#00a000", "#ff0000"))
COLOURS = {0: (0, 0, 255), 1: (0, 160, 0), 2: (255, 0, 0)}


def write_map(folder: Path, shape: tuple[int, int], seed: int = 0) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 3, (shape[0] // 64 + 1, shape[1] // 64 + 1))
    labels = np.kron(coarse, np.ones((64, 64), np.int64))[: shape[0], : shape[1]].astype(np.uint8)
    labels[:100, :150] = 255
    grid = Grid(shape, Affine(10.0, 0, 600000.0, 0, -10.0, 5000000.0), CRS.from_epsg(32632).to_wkt())
    sink = CogLabelSink(folder, grid, LEGEND, 255)
    for r in range(0, shape[0], 512):
        h = min(512, shape[0] - r)
        sink.write(Window((r, 0), (h, shape[1])), labels[r:r + h])
    return sink.commit(), labels


def images(page: str) -> list[np.ndarray]:
    found = [png_rgb(base64.b64decode(m)) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]
    assert all(f is not None for f in found)
    return [f for f in found if f is not None]


def assert_offline(page: str) -> None:
    """Nothing fetched from elsewhere: no script, no stylesheet or image by URL."""
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_quicklook_reads_an_overview_never_the_full_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cog, _ = write_map(tmp_path / "item", (2600, 3100))
    opened: list[dict[str, Any]] = []
    real = rasterio.open

    def spy(path: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(kwargs)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(rasterio, "open", spy)
    rgb, colormap, level = pages.quicklook(cog, 1024)
    monkeypatch.undo()
    assert level >= 0 and max(rgb.shape[:2]) <= 1024
    assert any(k.get("overview_level") == level for k in opened)
    with rasterio.open(cog, overview_level=level) as ds:  # the same picture, painted from the overview
        overview = ds.read(1)
    assert {k: colormap[k] for k in COLOURS} == COLOURS
    want = np.full((*overview.shape, 3), 255, np.uint8)
    for k, c in COLOURS.items():
        want[overview == k] = c
    np.testing.assert_array_equal(rgb, want)
    small, _, small_level = pages.quicklook(cog, 200)  # smaller than the smallest overview: thinned
    assert max(small.shape[:2]) <= 200 and small_level == len(rasterio.open(cog).overviews(1)) - 1


def test_item_report(tmp_path: Path) -> None:
    cog, _ = write_map(tmp_path / "scene", (700, 900))
    stats = ItemStats("scene", (ClassStats(0, "water", 300, 30000.0, 0.25), ClassStats(1, "trees", 600, 60000.0, 0.5),
                                ClassStats(2, "built", 300, 30000.0, 0.25)), 1200, 34, 120000.0, "planar", "planar",
                      zones=(ZoneStats("north", 0, "water", 10, 1000.0, 0.5, 10, 1000.0),
                             ZoneStats("north", 1, "trees", 10, 1000.0, 0.5, 4, 400.0)))
    page_path = pages.write_item_report(tmp_path / "scene", stats, cog, {"shape": [700, 900]})
    page = page_path.read_text(encoding="utf-8")
    assert_offline(page)
    (picture,) = images(page)
    assert picture.shape[:2] == (700, 900)  # small enough: the map itself
    for fragment in ("water", "trees", "built", "3.00", "6.00", "50.00", "<svg", "Zones (ha)", "north", "0.10",
                     'href="zones.csv"', "grid 900 × 700"):
        assert fragment in page, fragment
    assert "#0000ff" in page  # the legend swatch


def test_job_report_lists_items_zones_and_failures(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_map(tmp_path / name, (300, 400), seed=len(name))
    stats = ItemStats("a", (ClassStats(0, "water", 5, 500.0, 0.5), ClassStats(1, "trees", 5, 500.0, 0.5)), 10, 0,
                      1000.0, "planar", "")
    outcomes = [ItemOutcome("a", "a.tif", "ok", stats), ItemOutcome("b", "b.tif", "skipped", stats),
                ItemOutcome("c", "c.tif", "failed", error="c.tif: not a GeoTIFF")]
    zone_rows = [{"zone": "north", "class_name": "water", "pixels": 7, "area_ha": 0.07, "share": 0.7}]
    page = pages.write_job_report(tmp_path, outcomes, {"workflow": "lc"}, zone_rows).read_text(encoding="utf-8")
    assert_offline(page)
    assert len(images(page)) == 2 and all(max(i.shape[:2]) <= pages.THUMBNAIL_PX for i in images(page))
    # the classes over the job: 500 m² of water in each of the two items
    for fragment in ("3 item(s): 2 done, 1 failed", "c.tif: not a GeoTIFF", "north", "70.00", "<td>0.10</td>"):
        assert fragment in page, fragment


def test_change_report_holds_the_matrix(tmp_path: Path) -> None:
    before, b = write_map(tmp_path / "before", (300, 400), seed=1)
    after, a = write_map(tmp_path / "after", (300, 400), seed=2)
    result = change_maps(before, after, tmp_path / "change")
    assert result.report == tmp_path / "change" / "report.html"
    page = result.report.read_text(encoding="utf-8")
    assert_offline(page)
    assert len(images(page)) == 1
    valid = (b != 255) & (a != 255)
    for i in range(3):
        for j in range(3):
            ha = ((b == i) & (a == j) & valid).sum() * 100 / 10_000
            assert f"<td>{ha:,.2f}</td>" in page
    assert "rows before, columns after" in page
