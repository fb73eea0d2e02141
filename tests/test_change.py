"""geoseg change: the transition counts equal a direct count of the two maps; areas as the
statistics; the change COG's values, colour table and nodata; different grids refused unless
--reproject; run folders matched by item."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from geoseg_pipeline.change import _count_codes, change_runs
from geoseg_pipeline.cli import main
from geoseg_pipeline.errors import InputDataError
from geoseg_pipeline.geometry import Grid, Window
from geoseg_pipeline.sinks.cog import CogLabelSink
from geoseg_pipeline.sinks.legend import ClassLegend, default_colours

NAMES = ("water", "trees", "crops")


def _map(path: Path, labels: np.ndarray, crs: str = "EPSG:32633", res: float = 10.0,
         names: tuple[str, ...] = NAMES, origin: tuple[float, float] = (500000, 4600000)) -> Path:
    grid = Grid(labels.shape, from_origin(*origin, res, res), CRS.from_string(crs).to_wkt())
    sink = CogLabelSink(path, grid, ClassLegend(names, default_colours(len(names))), 255)
    sink.write(Window((0, 0), labels.shape), labels.astype(np.uint8))
    sink.commit()
    return path / "labels.tif"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_transitions_equal_a_direct_count(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    before = rng.integers(0, 3, (700, 530)).astype(np.uint8)
    after = np.where(rng.random(before.shape) < 0.2, rng.integers(0, 3, before.shape), before).astype(np.uint8)
    before[:5] = 255  # nodata in one map: not counted, nodata in the change map
    b, a = _map(tmp_path / "b", before), _map(tmp_path / "a", after)
    result = change_runs(b, a, tmp_path / "out").done["labels"]
    valid = before != 255
    expected = np.zeros((3, 3), int)
    np.add.at(expected, (before[valid], after[valid]), 1)
    np.testing.assert_array_equal(result.counts, expected)
    rows = _rows(result.transitions)
    assert [(r["from_class"], r["to_class"]) for r in rows[:2]] == [("water", "water"), ("water", "trees")]
    for r in rows:
        i, j = int(r["from_index"]), int(r["to_index"])
        assert int(r["pixels"]) == expected[i, j]
        assert float(r["area_m2"]) == pytest.approx(expected[i, j] * 100.0)
        assert float(r["area_ha"]) == pytest.approx(expected[i, j] * 0.01)
    net = {r["class"]: r for r in _rows(result.net_change)}
    assert int(net["trees"]["net_pixels"]) == expected[:, 1].sum() - expected[1].sum()
    with rasterio.open(result.change_map) as ds:
        code = ds.read(1)
        assert ds.nodata == 255 and ds.tags()["GEOSEG_CLASSES"].split(",")[1] == "water -> trees"
        cmap = ds.colormap(1)
        assert ds.overviews(1)  # a COG with overviews
    np.testing.assert_array_equal(code[valid], before[valid].astype(int) * 3 + after[valid])
    assert (code[~valid] == 255).all()
    assert len({cmap[i][:3] for i in range(9) if i % 4}) == 6  # each change its own colour


def test_odd_sizes_count_every_pixel_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    before = rng.integers(0, 3, (513, 531)).astype(np.uint8)  # the last strip is one row of 531
    after = rng.integers(0, 3, before.shape).astype(np.uint8)
    after[-1, -1] = 255
    result = change_runs(_map(tmp_path / "b", before), _map(tmp_path / "a", after), tmp_path / "out").done["labels"]
    valid = after != 255
    expected = np.zeros((3, 3), int)
    np.add.at(expected, (before[valid], after[valid]), 1)
    np.testing.assert_array_equal(result.counts, expected)
    for dtype, size in (("uint8", 1), ("uint8", 7), ("uint8", 10), ("uint16", 9)):
        codes = rng.integers(0, 300 if dtype == "uint16" else 256, size).astype(dtype)
        np.testing.assert_array_equal(_count_codes(codes, 100), np.bincount(codes, minlength=300)[:100])


def test_different_grids_are_refused_unless_reproject(tmp_path: Path) -> None:
    labels = np.tile(np.arange(3, dtype=np.uint8).repeat(20), (60, 1))
    b = _map(tmp_path / "b", labels)
    a = _map(tmp_path / "a", np.repeat(np.repeat(labels, 2, 0), 2, 1), res=5.0)
    with pytest.raises(InputDataError, match=r"different grids \(size"):
        change_runs(b, a, tmp_path / "out")
    result = change_runs(b, a, tmp_path / "out", reproject=True).done["labels"]
    assert result.counts.trace() == result.counts.sum() == labels.size  # the same map at twice the resolution
    other = _map(tmp_path / "o", labels, names=("water", "trees", "urban"))
    with pytest.raises(InputDataError, match="differ from"):
        change_runs(b, other, tmp_path / "out2")


def test_run_folders_are_matched_by_item(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    for run in ("y1", "y2"):
        for item in ("s1", "s2"):
            _map(tmp_path / run / item, rng.integers(0, 3, (40, 50)).astype(np.uint8))
    _map(tmp_path / "y1" / "only_before", np.zeros((10, 10), np.uint8))
    assert main(["change", str(tmp_path / "y1"), str(tmp_path / "y2"), "--out", str(tmp_path / "chg")]) == 0
    assert sorted(p.parent.name for p in (tmp_path / "chg").glob("*/change.tif")) == ["s1", "s2"]
    assert "not compared only_before: only in " in capsys.readouterr().out  # said, not an error
    assert main(["change", str(tmp_path / "y1"), str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 1
    assert "nothing: no such file or folder" in capsys.readouterr().err


def test_a_bad_item_fails_alone_and_the_others_are_compared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    for run in ("y1", "y2"):
        for item in ("a", "b", "c"):
            _map(tmp_path / run / item, rng.integers(0, 3, (600, 70)).astype(np.uint8))
    good = (tmp_path / "y2" / "a" / "labels.tif").read_bytes()
    (tmp_path / "y2" / "a" / "labels.tif").write_bytes(good[: len(good) * 2 // 3])  # truncated: the tiles go
    (tmp_path / "y2" / "b" / "labels.tif").write_text("not a raster", encoding="utf-8")
    assert main(["change", str(tmp_path / "y1"), str(tmp_path / "y2"), "--out", str(tmp_path / "chg")]) == 1
    out = capsys.readouterr().out
    assert f"FAILED a: {tmp_path / 'y2' / 'a' / 'labels.tif'}: cannot read rows" in out
    assert f"FAILED b: {tmp_path / 'y2' / 'b' / 'labels.tif'}: cannot be read as a label map" in out
    assert "1 item(s) compared, 2 failed" in out
    assert (tmp_path / "chg" / "c" / "change.tif").is_file()
    assert not (tmp_path / "chg" / "a").exists() and not (tmp_path / "chg" / "b").exists()  # nothing half-written


@pytest.mark.parametrize("bad", ["value", "float", "bands"])
def test_what_is_not_a_label_map_of_those_classes_is_refused(tmp_path: Path, bad: str) -> None:
    labels = np.random.default_rng(4).integers(0, 3, (30, 40)).astype(np.uint8)
    b = _map(tmp_path / "b", labels)
    a = _map(tmp_path / "a", labels)
    with rasterio.open(a) as ds:
        profile, tags, data = ds.profile, ds.tags(), ds.read()
    profile.update(driver="GTiff")
    if bad == "value":
        data[0, 12, 7] = 7  # neither a class (0..2) nor the nodata 255: it would vanish from the counts
        fragment = rf"{a}: value 7 at row 12, col 7 is neither one of its 3 classes \(0..2\) nor its nodata \(255\)"
    elif bad == "float":
        profile.update(dtype="float32", nodata=None)
        data = data.astype(np.float32) + 0.5
        fragment = f"{a}: holds float32 values"
    else:
        profile.update(count=2)
        data = np.concatenate([data, data])
        fragment = f"{a}: has 2 bands"
    a.unlink()
    with rasterio.open(a, "w", **profile) as ds:
        ds.write(data)
        ds.update_tags(**tags)
    with pytest.raises(InputDataError, match=fragment):
        change_runs(b, a, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_geodesic_areas_on_a_geographic_grid(tmp_path: Path) -> None:
    from geoseg_pipeline.statistics.area import pixel_areas

    rng = np.random.default_rng(2)
    before = rng.integers(0, 3, (90, 120)).astype(np.uint8)
    after = rng.integers(0, 3, (90, 120)).astype(np.uint8)
    b = _map(tmp_path / "b", before, crs="EPSG:4326", res=0.5, origin=(10.0, 75.0))
    a = _map(tmp_path / "a", after, crs="EPSG:4326", res=0.5, origin=(10.0, 75.0))
    result = change_runs(b, a, tmp_path / "out").done["labels"]
    with rasterio.open(b) as ds:
        rows = pixel_areas(Grid((ds.height, ds.width), ds.transform, ds.crs.to_wkt())).row_area_m2
    assert rows is not None and rows.std() > 0  # geodesic: the pixel area varies with latitude
    expected = np.zeros((3, 3))
    np.add.at(expected, (before, after), np.broadcast_to(rows[:, None], before.shape))
    got = {(int(r["from_index"]), int(r["to_index"])): float(r["area_m2"]) for r in _rows(result.transitions)}
    for (i, j), m2 in got.items():
        assert m2 == pytest.approx(expected[i, j], rel=1e-9)


def _other_tool_map(path: Path, labels: np.ndarray, dtype: str, nodata: int | None) -> Path:
    """A label map another tool wrote: a plain GeoTIFF of ``dtype`` with its own nodata value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=labels.shape[1], height=labels.shape[0], count=1,
                       dtype=dtype, nodata=nodata, crs="EPSG:32633", transform=from_origin(500000, 4600000, 10, 10),
                       tiled=True, blockxsize=256, blockysize=256) as ds:
        ds.write(labels.astype(dtype), 1)
        ds.update_tags(GEOSEG_CLASSES=",".join(NAMES))
    return path


@pytest.mark.parametrize(("dtype", "nodata", "stray"), [("uint16", 65535, 257), ("int16", -1, -5), ("uint8", 0, 7),
                                                        ("uint16", 300, 301)])
def test_maps_of_other_types_and_nodata_values(tmp_path: Path, dtype: str, nodata: int, stray: int) -> None:
    """Counts equal a direct count whatever the maps' type and nodata (a class value, a negative
    one, the type's largest or neither); a value that is neither a class nor nodata is refused,
    even one that a cast to the change map's type would turn into a class (257 -> 1)."""
    rng = np.random.default_rng(7)
    before = rng.integers(0, 3, (600, 700)).astype(np.int64)
    after = np.where(rng.random(before.shape) < 0.3, rng.integers(0, 3, before.shape), before)
    before[rng.random(before.shape) < 0.05] = nodata
    after[:40, 100:300] = nodata
    b = _other_tool_map(tmp_path / "b.tif", before, dtype, nodata)
    a = _other_tool_map(tmp_path / "a.tif", after, dtype, nodata)
    result = change_runs(b, a, tmp_path / "out").done["b"]
    valid = (before != nodata) & (after != nodata)
    expected = np.zeros((3, 3), int)
    np.add.at(expected, (before[valid], after[valid]), 1)
    np.testing.assert_array_equal(result.counts, expected)
    with rasterio.open(result.change_map) as ds:
        np.testing.assert_array_equal(ds.read(1), np.where(valid, before * 3 + after, 255))
    after[555, 666] = stray
    a = _other_tool_map(tmp_path / "a.tif", after, dtype, nodata)
    with pytest.raises(InputDataError, match=rf"value {stray} at row 555, col 666 is neither one of its 3 classes"):
        change_runs(b, a, tmp_path / "out2")


def test_a_map_without_nodata_has_every_pixel_counted_and_no_stray_value(tmp_path: Path) -> None:
    """A map that declares no nodata value has none: every pixel is counted, and a value that is
    not a class (255 included, which used to pass as nodata) is refused; reprojected, the
    pixels the second map does not cover are nodata in the change map."""
    rng = np.random.default_rng(11)
    before = rng.integers(0, 3, (300, 400))
    after = np.where(rng.random(before.shape) < 0.3, rng.integers(0, 3, before.shape), before)
    b = _other_tool_map(tmp_path / "b.tif", before, "uint8", None)
    a = _other_tool_map(tmp_path / "a.tif", after, "uint8", None)
    result = change_runs(b, a, tmp_path / "out").done["b"]
    expected = np.zeros((3, 3), int)
    np.add.at(expected, (before.ravel(), after.ravel()), 1)
    np.testing.assert_array_equal(result.counts, expected)
    after[123, 45] = 255
    a = _other_tool_map(tmp_path / "a.tif", after, "uint8", None)
    with pytest.raises(InputDataError, match=r"value 255 at row 123, col 45 is not one of its 3 classes \(0\.\.2\), "
                                             r"and the map has no nodata value"):
        change_runs(b, a, tmp_path / "out2")
    after[123, 45] = 1
    shifted = tmp_path / "shifted.tif"  # the same map 100 m (10 pixels) further east
    with rasterio.open(shifted, "w", driver="GTiff", width=400, height=300, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500100, 4600000, 10, 10)) as ds:
        ds.write(after.astype(np.uint8), 1)
        ds.update_tags(GEOSEG_CLASSES=",".join(NAMES))
    moved = change_runs(b, shifted, tmp_path / "out3", reproject=True).done["b"]
    np.add.at(expected := np.zeros((3, 3), int), (before[:, 10:].ravel(), after[:, :-10].ravel()), 1)
    np.testing.assert_array_equal(moved.counts, expected)
    with rasterio.open(moved.change_map) as ds:
        assert (ds.read(1)[:, :10] == ds.nodata).all()
    # reprojected, a stray 255 is still refused: the uncovered pixels come from the warp's alpha
    # band, not from a value the map could hold
    after[200, 300] = 255
    with rasterio.open(shifted, "r+") as ds:
        ds.write(after.astype(np.uint8), 1)
    with pytest.raises(InputDataError, match=r"value 255 at row 200, col 310 is not one of its 3 classes"):
        change_runs(b, shifted, tmp_path / "out4", reproject=True)


def test_a_signed_map_without_nodata(tmp_path: Path) -> None:
    """An int16 map that declares no nodata: -1 is a stray value, not nodata."""
    rng = np.random.default_rng(12)
    before = rng.integers(0, 3, (100, 120))
    b = _other_tool_map(tmp_path / "b.tif", before, "int16", None)
    result = change_runs(b, b, tmp_path / "out").done["b"]
    np.testing.assert_array_equal(np.diag(result.counts), np.bincount(before.ravel(), minlength=3))
    before[7, 9] = -1
    a = _other_tool_map(tmp_path / "a.tif", before, "int16", None)
    with pytest.raises(InputDataError, match=r"value -1 at row 7, col 9 is not one of its 3 classes"):
        change_runs(b, a, tmp_path / "out2")


def test_a_reprojected_uint16_map_without_nodata_over_several_strips(tmp_path: Path) -> None:
    """The warp's alpha band marks what AFTER does not cover on every strip (700 rows: two
    strips of 512), for a uint16 map too; the change map is nodata exactly there."""
    rng = np.random.default_rng(13)
    before = rng.integers(0, 3, (700, 90))
    after = rng.integers(0, 3, (700, 90))
    b = _other_tool_map(tmp_path / "b.tif", before, "uint16", None)
    shifted = tmp_path / "shifted.tif"  # 7 pixels (70 m) further north: BEFORE's last 7 rows, in the
    # second strip, are not covered
    with rasterio.open(shifted, "w", driver="GTiff", width=90, height=700, count=1, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(500000, 4600000 + 70, 10, 10)) as ds:
        ds.write(after.astype(np.uint16), 1)
        ds.update_tags(GEOSEG_CLASSES=",".join(NAMES))
    result = change_runs(b, shifted, tmp_path / "out", reproject=True).done["b"]
    expected = np.zeros((3, 3), int)
    np.add.at(expected, (before[:-7].ravel(), after[7:].ravel()), 1)
    np.testing.assert_array_equal(result.counts, expected)
    with rasterio.open(result.change_map) as ds:
        change = ds.read(1)
        assert (change[-7:] == ds.nodata).all() and not (change[:-7] == ds.nodata).any()
