"""COG label sink (georeferencing, legend, overviews, atomic publish) and report tables."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import CRS
from rio_cogeo.cogeo import cog_validate

from geoseg_pipeline.geometry import Grid, Window
from geoseg_pipeline.report import ItemOutcome, write_item_stats, write_summary
from geoseg_pipeline.sinks import ClassLegend, CogLabelSink, LogitsSink, commit_together
from geoseg_pipeline.statistics import ClassTally, pixel_areas
from geoseg_pipeline.storage import atomic_write_text

LEGEND = ClassLegend(("water", "trees & shrubs", "built <up>"), ("#0000ff", "#00a000", "#ff8000"))
TRANSFORM = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0)


def _labels(shape: tuple[int, int]) -> np.ndarray:
    rows, cols = np.indices(shape)
    labels = ((rows // 40 + cols // 40) % 3).astype(np.uint8)
    labels[:13, :17] = 255
    return labels


def _write(sink: CogLabelSink, labels: np.ndarray, block: int, logits: np.ndarray | None = None) -> None:
    h, w = labels.shape
    blocks = [(r, c) for r in range(0, h, block) for c in range(0, w, block)]
    for r, c in reversed(blocks):  # order must not matter
        win = Window((r, c), (min(block, h - r), min(block, w - c)))
        part = None if logits is None else logits[(slice(None), *win.slices())]
        sink.write(win, labels[win.slices()], part)


def _staging(out: Path) -> list[Path]:
    return [p for p in out.iterdir() if p.name.startswith(".staging-")]


@pytest.fixture(scope="module")
def big_cog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, Grid]:
    out = tmp_path_factory.mktemp("big") / "scene"
    grid = Grid((1024, 1024), TRANSFORM, CRS.from_epsg(32632).to_wkt())
    labels = _labels(grid.shape)
    sink = CogLabelSink(out, grid, LEGEND, 255)
    _write(sink, labels, 512)
    path = sink.commit()
    return path, labels, grid


def test_commit_publishes_a_valid_cog(big_cog: tuple[Path, np.ndarray, Grid]) -> None:
    path, _, _ = big_cog
    assert path == path.parent / "labels.tif"
    valid, errors, warnings = cog_validate(str(path), quiet=True)
    assert valid, (errors, warnings)
    assert errors == []
    assert _staging(path.parent) == []
    assert sorted(p.name for p in path.parent.iterdir()) == ["labels.tif", "labels.tif.aux.xml"]


def test_pixels_and_georeferencing(big_cog: tuple[Path, np.ndarray, Grid]) -> None:
    path, labels, grid = big_cog
    with rasterio.open(path) as ds:
        assert (ds.height, ds.width, ds.count) == (1024, 1024, 1)
        assert ds.dtypes == ("uint8",)
        assert ds.transform == grid.transform
        assert ds.crs is not None and CRS.from_user_input(ds.crs.to_wkt()) == CRS.from_epsg(32632)
        assert ds.nodata == 255
        np.testing.assert_array_equal(ds.read(1), labels)
        assert ds.block_shapes == [(512, 512)]


def test_overviews(big_cog: tuple[Path, np.ndarray, Grid]) -> None:
    path, labels, _ = big_cog
    with rasterio.open(path) as ds:
        assert ds.overviews(1) == [2]
    with rasterio.open(path, OVERVIEW_LEVEL=0) as ov:
        assert (ov.height, ov.width) == (512, 512)
        got = ov.read(1)
    # nearest resampling never invents labels
    assert set(np.unique(got)) <= set(np.unique(labels))


def test_legend(big_cog: tuple[Path, np.ndarray, Grid]) -> None:
    path, _, _ = big_cog
    with rasterio.open(path) as ds:
        cmap = ds.colormap(1)
        assert cmap[0] == (0, 0, 255, 255)
        assert cmap[1] == (0, 160, 0, 255)
        assert cmap[2] == (255, 128, 0, 255)
        assert ds.tags()["GEOSEG_CLASSES"] == "water,trees & shrubs,built <up>"
        band_tags = ds.tags(1)
        assert band_tags["class_0"] == "water"
        assert band_tags["class_1"] == "trees & shrubs"
        assert band_tags["class_2"] == "built <up>"
        assert ds.descriptions == ("class",)
    root = ET.parse(path.parent / "labels.tif.aux.xml").getroot()
    names = [c.text for c in root.iter("Category")]
    assert names == ["water", "trees & shrubs", "built <up>"]
    assert root.find("PAMRasterBand").get("band") == "1"  # type: ignore[union-attr]


def test_small_grid_with_logits(tmp_path: Path) -> None:
    grid = Grid((37, 45), TRANSFORM, "EPSG:32632")
    labels = _labels(grid.shape)
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 37, 45)).astype(np.float32)
    logits[:, :13, :17] = np.nan
    sink = CogLabelSink(tmp_path / "s", grid, LEGEND, 255, compression="zstd", overview_resampling="mode")
    logits_sink = LogitsSink(tmp_path / "s", grid, 3, compression="zstd")
    _write(sink, labels, 16, logits)
    _write(logits_sink, labels, 16, logits)
    path, _ = commit_together([sink, logits_sink])
    assert cog_validate(str(path), quiet=True)[0]
    with rasterio.open(path) as ds:
        np.testing.assert_array_equal(ds.read(1), labels)
        assert ds.transform == TRANSFORM
    with rasterio.open(tmp_path / "s" / "logits.tif") as ds:
        assert ds.count == 3
        assert ds.dtypes == ("float32",) * 3
        assert ds.transform == TRANSFORM
        np.testing.assert_array_equal(ds.read(), logits)  # NaN equal NaN here
    assert _staging(tmp_path / "s") == []


def test_no_logits_file_without_the_logits_sink(tmp_path: Path) -> None:
    sink = CogLabelSink(tmp_path / "s", Grid((20, 20), TRANSFORM, "EPSG:32632"), LEGEND, 255)
    _write(sink, _labels((20, 20)), 16)
    sink.commit()
    assert not (tmp_path / "s" / "logits.tif").exists()


def test_uint16_labels_for_many_classes(tmp_path: Path) -> None:
    names = tuple(f"c{i}" for i in range(300))
    legend = ClassLegend(names, ("#102030",) * 300)
    grid = Grid((20, 24), TRANSFORM, "EPSG:32632")
    labels = (np.arange(480).reshape(20, 24) % 300).astype(np.uint16)
    sink = CogLabelSink(tmp_path / "s", grid, legend, 65535)
    assert sink.dtype == "uint16"
    sink.write(Window((0, 0), (20, 24)), labels)
    path = sink.commit()
    with rasterio.open(path) as ds:
        assert ds.dtypes == ("uint16",)
        assert ds.nodata == 65535
        np.testing.assert_array_equal(ds.read(1), labels)


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "s"
    sink = LogitsSink(out, Grid((40, 40), TRANSFORM, "EPSG:32632"), 3)
    assert len(_staging(out)) == 1
    sink.write(Window((0, 0), (16, 16)), np.zeros((16, 16), np.uint8), np.zeros((3, 16, 16), np.float32))
    sink.abort()
    assert list(out.iterdir()) == []


def test_atomic_write_text(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b.txt"
    atomic_write_text(path, "one\n")
    atomic_write_text(path, "two\n")
    assert path.read_text(encoding="utf-8") == "two\n"
    assert [p.name for p in path.parent.iterdir()] == ["b.txt"]


# --- report tables --------------------------------------------------------------------------------


def _stats(item: str, with_crs: bool = True) -> object:
    grid = Grid((4, 4), Affine(10, 0, 0, 0, -10, 0), "EPSG:32632" if with_crs else None)
    tally = ClassTally(2, pixel_areas(grid))
    labels = np.array([[0, 0, 1, 1]] * 4, dtype=np.uint8)
    valid = np.ones((4, 4), bool)
    valid[0, 0] = False
    tally.count(Window((0, 0), (4, 4)), labels, valid)
    return tally.result(item, ["water", "land"])


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def test_write_item_stats(tmp_path: Path) -> None:
    stats = _stats("scene")
    paths = write_item_stats(tmp_path, "/data/scene.tif", stats, {"seconds": 1.5})  # type: ignore[arg-type]
    assert paths == [tmp_path / "stats.json", tmp_path / "stats.csv"]
    columns, rows = _read_csv(tmp_path / "stats.csv")
    assert columns == ["class_index", "class_name", "pixels", "area_m2", "area_ha", "volume_ml", "share"]
    assert rows == [
        {"class_index": "0", "class_name": "water", "pixels": "7", "area_m2": "700.0", "area_ha": "0.07",
         "volume_ml": "", "share": str(7 / 15)},
        {"class_index": "1", "class_name": "land", "pixels": "8", "area_m2": "800.0", "area_ha": "0.08",
         "volume_ml": "", "share": str(8 / 15)},
    ]
    doc = json.loads((tmp_path / "stats.json").read_text(encoding="utf-8"))
    assert doc["item"] == "scene"
    assert doc["source"] == "/data/scene.tif"
    assert doc["valid_pixels"] == 15 and doc["nodata_pixels"] == 1
    assert doc["valid_area_m2"] == 1500.0 and doc["valid_area_ha"] == 0.15
    assert doc["share_of"] == "valid area"
    assert doc["seconds"] == 1.5
    assert [c["class_name"] for c in doc["classes"]] == ["water", "land"]


def test_write_item_stats_without_areas(tmp_path: Path) -> None:
    write_item_stats(tmp_path, "x.tif", _stats("x", with_crs=False), {})  # type: ignore[arg-type]
    _, rows = _read_csv(tmp_path / "stats.csv")
    assert [(r["area_m2"], r["area_ha"]) for r in rows] == [("", ""), ("", "")]
    doc = json.loads((tmp_path / "stats.json").read_text(encoding="utf-8"))
    assert doc["valid_area_m2"] is None and doc["valid_area_ha"] is None
    assert doc["share_of"] == "valid pixels"
    assert doc["area_method"] == "none"


def test_write_summary_with_a_failed_item(tmp_path: Path) -> None:
    outcomes = [
        ItemOutcome("a", "/d/a.tif", "ok", stats=_stats("a"), outputs=("/o/a/labels.tif",), seconds=2.34567,
                    windows=12, extra={"windows_skipped_nodata": 3}),  # type: ignore[arg-type]
        ItemOutcome("b", "/d/b.tif", "failed", error="/d/b.tif: cannot open as a raster: boom"),
    ]
    paths = write_summary(tmp_path, outcomes, {"workflow": "demo", "ok": 1, "failed": 1})
    assert paths == [tmp_path / "summary.csv", tmp_path / "summary.json"]
    columns, rows = _read_csv(tmp_path / "summary.csv")
    assert columns == ["item", "status", "class_index", "class_name", "pixels", "area_m2", "area_ha", "volume_ml",
                       "share", "source", "error"]
    assert [(r["item"], r["status"], r["class_name"], r["pixels"]) for r in rows] == [
        ("a", "ok", "water", "7"), ("a", "ok", "land", "8"), ("b", "failed", "", ""),
    ]
    assert rows[0]["source"] == "/d/a.tif" and rows[0]["error"] == ""
    failed = rows[2]
    assert failed["source"] == "/d/b.tif"
    assert failed["error"] == "/d/b.tif: cannot open as a raster: boom"
    assert all(failed[c] == "" for c in ["class_index", "pixels", "area_m2", "area_ha", "volume_ml", "share"])
    doc = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert doc["workflow"] == "demo"
    assert doc["items"][0] == {"item": "a", "source": "/d/a.tif", "status": "ok", "error": None,
                               "seconds": 2.346, "windows": 12, "outputs": ["/o/a/labels.tif"],
                               "windows_skipped_nodata": 3}
    assert doc["items"][1]["status"] == "failed"
    assert doc["items"][1]["error"] == "/d/b.tif: cannot open as a raster: boom"
    assert doc["items"][1]["outputs"] == []


def test_atomic_text_files_are_readable_by_others(tmp_path: Path) -> None:
    import os
    import stat

    from geoseg_pipeline.storage import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "summary.csv", "a,b\n")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "summary.csv").stat().st_mode)
    assert mode == 0o644, oct(mode)
