"""`statistics.zones` in a job: zones.csv per item from the published map, and zones_summary.csv
counting the ground two overlapping scenes share once; a re-run that skips every item writes the
same summary from the ledger."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import geopandas
import numpy as np
import pytest
import rasterio
import shapely
import yaml
from pyproj import CRS, Transformer
from rasterio.transform import from_origin

from geoseg_pipeline.cli import main

CLASSES = ("water", "trees", "built")


def _rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open() as f:
        return {(r["zone"], r["class_name"]): r for r in csv.DictReader(f)}


def _centres(ds: rasterio.DatasetReader) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.indices(ds.shape)
    x, y = ds.transform * (cols + 0.5, rows + 0.5)
    return np.asarray(x), np.asarray(y)


@pytest.mark.usefixtures("ray_local")
def test_two_overlapping_scenes_and_districts(tmp_path: Path, write_raster: Callable[..., Path],
                                             conv_model: Callable[..., Path]) -> None:
    rng = np.random.default_rng(11)
    # two 96 x 128 scenes, 10 m pixels, the second shifted 60 columns east and 30 rows south
    west = write_raster("a_west.tif", rng.integers(1, 200, (3, 96, 128)).astype("uint8"),
                        crs="EPSG:32633", transform=from_origin(500000, 5200000, 10, 10))
    east = write_raster("b_east.tif", rng.integers(1, 200, (3, 96, 128)).astype("uint8"),
                        crs="EPSG:32633", transform=from_origin(500600, 5199700, 10, 10))
    # districts drawn in lon/lat: one across both scenes and their overlap, one in the east only
    to_ll = Transformer.from_crs(32633, 4326, always_xy=True)

    def ll(poly: shapely.Polygon) -> shapely.Polygon:
        return shapely.transform(poly, lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1])))

    north = ll(shapely.box(500105.3, 5199255.7, 501650.9, 5199905.1))
    south = ll(shapely.box(501200.2, 5198850.4, 501750.6, 5199150.8))
    zones = tmp_path / "districts.gpkg"
    geopandas.GeoDataFrame({"NAME": ["north", "south"]}, geometry=[north, south], crs="EPSG:4326").to_file(zones)
    wf = {
        "inputs": {"paths": [str(west), str(east)]},
        "model": {"type": "torchscript", "path": str(conv_model(in_channels=3, classes=3, seed=2)),
                  "in_channels": 3},
        "tiling": {"roi_size": [32, 32], "block_size": 32},
        "output": {"directory": str(tmp_path / "out")},
        "statistics": {"zones": {"path": "districts.gpkg", "id_field": "NAME"}},
        "classes": [{"name": n} for n in CLASSES],
        "resources": {"workers": 2},
    }
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(wf))
    assert main(["--no-progress", "run", str(path)]) == 0
    out = tmp_path / "out"

    # the reference: pixel centres tested against the districts in lon/lat, on the published maps
    summary: dict[tuple[str, str], int] = {}
    covered = None
    for name in ("a_west", "b_east"):
        with rasterio.open(out / name / "labels.tif") as ds:
            labels = ds.read(1)
            x, y = _centres(ds)
            footprint = shapely.box(*ds.bounds)
        lon, lat = to_ll.transform(x, y)
        got = _rows(out / name / "zones.csv")
        own = ~shapely.contains_xy(covered, x, y) if covered is not None else np.ones(labels.shape, bool)
        for zone, geom in (("north", north), ("south", south)):
            inside = shapely.contains_xy(geom, lon, lat) & (labels != 255)
            for k, cls in enumerate(CLASSES):
                m = inside & (labels == k)
                if inside.any():
                    assert int(got[(zone, cls)]["pixels"]) == int(m.sum()), (name, zone, cls)
                    assert float(got[(zone, cls)]["area_m2"]) == pytest.approx(100.0 * m.sum())
                    assert int(got[(zone, cls)]["own_pixels"]) == int((m & own).sum())
                else:
                    assert (zone, cls) not in got
                summary[(zone, cls)] = summary.get((zone, cls), 0) + int((m & own).sum())
        covered = footprint if covered is None else shapely.union(covered, footprint)

    def check_summary() -> None:
        rows = _rows(out / "zones_summary.csv")
        assert {k: int(r["pixels"]) for k, r in rows.items()} == summary
        assert int(rows[("north", "water")]["items"]) in (1, 2)
        for zone in ("north", "south"):
            assert sum(float(r["share"]) for k, r in rows.items() if k[0] == zone) == pytest.approx(1.0)

    check_summary()
    job_page = (out / "report.html").read_text(encoding="utf-8")
    assert "Zones over the job" in job_page and 'href="a_west/report.html"' in job_page
    assert "Zones (ha)" in (out / "a_west" / "report.html").read_text(encoding="utf-8")
    # the overlap was counted once: fewer pixels than the two items' tables together
    both = sum(int(r["pixels"]) for n in ("a_west", "b_east") for r in _rows(out / n / "zones.csv").values())
    assert sum(summary.values()) < both
    assert CRS.from_epsg(4326) == CRS.from_user_input(geopandas.read_file(zones).crs)

    # a re-run skips both items and writes the same summary from the ledger
    (out / "zones_summary.csv").unlink()
    assert main(["--no-progress", "run", str(path)]) == 0
    check_summary()


def _one_scene_job(tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path],
                   zones: str) -> int:
    """``geoseg run`` on a 40 x 40 scene (EPSG:32633 near 15° E) with ``zones``; its exit status."""
    scene = write_raster("scene.tif", np.ones((3, 40, 40), "uint8"))
    wf = {
        "inputs": {"paths": [str(scene)]},
        "model": {"type": "torchscript", "path": str(conv_model(in_channels=3, classes=3)), "in_channels": 3},
        "tiling": {"roi_size": [32, 32]},
        "output": {"directory": str(tmp_path / "out")},
        "statistics": {"zones": {"path": zones, "id_field": "NAME"}},
        "resources": {"backend": "local", "workers": 1},
    }
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(wf))
    return main(["--no-progress", "run", str(path)])


def test_a_missing_zone_file_fails_the_items_with_its_name(tmp_path: Path, write_raster: Callable[..., Path],
                                                          conv_model: Callable[..., Path]) -> None:
    assert _one_scene_job(tmp_path, write_raster, conv_model, "nowhere.gpkg") == 1
    text = (tmp_path / "out" / "summary.csv").read_text()
    assert "nowhere.gpkg" in text and "cannot read the zones" in text
    assert not (tmp_path / "out" / "scene" / "labels.tif").exists()


def test_validate_reads_the_zones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "scene.tif").write_bytes(b"")
    (tmp_path / "m.pt").write_bytes(b"")
    geopandas.GeoDataFrame({"NAME": ["a"]}, geometry=[shapely.box(0, 0, 1, 1)], crs="EPSG:4326").to_file(
        tmp_path / "d.gpkg")
    wf = {"inputs": {"paths": ["scene.tif"]}, "model": {"type": "torchscript", "path": "m.pt"},
          "output": {"directory": "out"}, "statistics": {"zones": {"path": "d.gpkg", "id_field": "CODE"}}}
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(wf))
    assert main(["validate", str(path)]) == 2
    assert "statistics.zones:" in (err := capsys.readouterr().err) and "no field 'CODE'" in err
    wf["statistics"]["zones"]["id_field"] = "NAME"  # type: ignore[index]
    path.write_text(yaml.safe_dump(wf))
    assert main(["validate", str(path)]) == 0
    wf["tiling"] = {"roi_size": [8, 8, 8]}
    path.write_text(yaml.safe_dump(wf))
    assert main(["validate", str(path)]) == 2
    assert "statistics.zones: applies to rasters only" in capsys.readouterr().err


def test_zones_beside_the_scene_give_an_empty_table_not_an_error(
        tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path]) -> None:
    geopandas.GeoDataFrame({"NAME": ["elsewhere"]}, geometry=[shapely.box(100, 10, 101, 11)],
                           crs="EPSG:4326").to_file(tmp_path / "far.gpkg")
    assert _one_scene_job(tmp_path, write_raster, conv_model, "far.gpkg") == 0
    assert (tmp_path / "out" / "scene" / "zones.csv").read_text().splitlines() == [
        "zone,class_index,class_name,pixels,area_m2,area_ha,share,own_pixels,own_area_m2"]


def test_zone_counts_equal_rasterstats(tmp_path: Path, conv_model: Callable[..., Path]) -> None:
    """An independent zonal-statistics library (rasterstats, categorical, pixel centres) counts
    the same pixels per zone and class in the published map."""
    from rasterstats import zonal_stats

    scene = Path(__file__).resolve().parents[1] / "data" / "real" / "RGB.byte.tif"
    with rasterio.open(scene) as ds:
        left, bottom, right, top = ds.bounds
        crs = ds.crs.to_wkt()
    rng = np.random.default_rng(4)
    zones = []
    for _ in range(12):  # quadrilaterals with vertices off the pixel lattice, some overlapping, one beyond
        cx, cy = left + rng.uniform(0.05, 1.05) * (right - left), bottom + rng.uniform(0.05, 0.95) * (top - bottom)
        r = rng.uniform(5_000, 40_000)
        zones.append(shapely.Polygon([(cx - r, cy - 0.7 * r), (cx + 0.9 * r, cy - r), (cx + r, cy + 0.8 * r),
                                      (cx - 0.6 * r, cy + r)]))
    names = [f"z{i:02d}" for i in range(len(zones))]
    geopandas.GeoDataFrame({"NAME": names}, geometry=zones, crs=crs).to_file(tmp_path / "zones.gpkg")
    wf = {
        "inputs": {"paths": [str(scene)]},
        "model": {"type": "torchscript", "path": str(conv_model(in_channels=3, classes=3, seed=5)),
                  "in_channels": 3},
        "tiling": {"roi_size": [64, 64], "block_size": 128},
        "output": {"directory": str(tmp_path / "out")},
        "statistics": {"zones": {"path": "zones.gpkg", "id_field": "NAME"}},
        "resources": {"backend": "local", "workers": 2},
    }
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(wf))
    assert main(["--no-progress", "run", str(tmp_path / "wf.yaml")]) == 0
    item = tmp_path / "out" / "RGB.byte"
    with (item / "zones.csv").open() as f:
        ours: dict[str, dict[int, int]] = {}
        for row in csv.DictReader(f):
            ours.setdefault(row["zone"], {})[int(row["class_index"])] = int(row["pixels"])
    theirs = zonal_stats(str(tmp_path / "zones.gpkg"), str(item / "labels.tif"), categorical=True, nodata=255)
    for name, counts in zip(names, theirs, strict=True):
        counts = {int(k): int(v) for k, v in counts.items() if v}
        mine = {k: v for k, v in ours.get(name, {}).items() if v}
        assert mine == counts, name
    assert sum(len(v) for v in ours.values()) > 10
