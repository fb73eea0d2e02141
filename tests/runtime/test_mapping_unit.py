"""`output.min_mapping_unit` in a job: the label map is GDAL's sieve of the unsieved run's map, and
the polygons, the class statistics and the zones are those of the sieved map."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import geopandas
import numpy as np
import polygons
import pytest
import rasterio
import shapely
import yaml
from rasterio import features

from geoseg_pipeline.cli import main

DATA = Path(__file__).resolve().parents[1] / "data" / "real"


def _run(tmp_path: Path, model: Path, name: str, output: dict[str, object], **extra: object) -> Path:
    wf = {
        "inputs": {"paths": [str(DATA / "RGB.byte.tif")]},
        "model": {"type": "torchscript", "path": str(model), "in_channels": 3, "num_classes": 3},
        "tiling": {"roi_size": [64, 64], "block_size": 128},
        "output": {"directory": str(tmp_path / name), **output},
        "resources": {"backend": "local", "workers": 2},
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(wf))
    assert main(["--no-progress", "run", str(path)]) == 0
    return tmp_path / name / "RGB.byte"


@pytest.mark.parametrize(("unit", "pixels", "connectivity"), [(12, 12, 4), ("90 ha", 10, 8)])
def test_the_map_its_polygons_and_statistics_are_sieved(tmp_path: Path, conv_model: Callable[..., Path],
                                                        unit: object, pixels: int, connectivity: int) -> None:
    model = conv_model(in_channels=3, classes=3, seed=5)
    geopandas.GeoDataFrame({"NAME": ["all"]}, geometry=[shapely.box(0, 2600000, 400000, 2900000)],
                           crs="EPSG:32618").to_file(tmp_path / "z.gpkg")
    zones = {"statistics": {"zones": {"path": str(tmp_path / "z.gpkg"), "id_field": "NAME"}}}
    raw = _run(tmp_path, model, "raw", {"formats": ["cog"]})
    sieved = _run(tmp_path, model, "sieved", {"formats": ["cog", "geoparquet"], "min_mapping_unit": unit,
                                              "connectivity": connectivity}, **zones)
    with rasterio.open(raw / "labels.tif") as a, rasterio.open(sieved / "labels.tif") as b:
        before, after, transform = a.read(1), b.read(1), b.transform
        assert (b.crs, b.transform, b.nodata) == (a.crs, a.transform, 255)
    # pixels of 300.04 m: 90 ha is 9.998 pixels, so regions under 10 pixels go
    want = features.sieve(before, pixels, mask=before != 255, connectivity=connectivity)
    np.testing.assert_array_equal(after, want)
    assert (after != before).sum() > 100
    stats = json.loads((sieved / "stats.json").read_text())
    assert stats["min_mapping_unit_pixels"] == pixels and stats["pixels_sieved"] == int((after != before).sum())
    counts = np.bincount(after[after != 255], minlength=3)
    assert [c["pixels"] for c in stats["classes"]] == counts.tolist()
    frame = geopandas.read_parquet(sieved / "labels.parquet")
    ref = polygons.gdal_polygons(after, transform, 255, connectivity)
    if connectivity == 4:
        polygons.assert_same_polygons(zip(frame.class_index, frame.geometry, strict=True), ref, 1e-6 * transform.a)
    assert len(frame) == len(ref)
    # far fewer regions than before the sieve
    assert len(frame) < 0.5 * len(polygons.gdal_polygons(before, transform, 255, connectivity))
    with (sieved / "zones.csv").open() as f:
        zone = {int(r["class_index"]): int(r["pixels"]) for r in csv.DictReader(f)}
    assert sum(zone.values()) > 0 and all(zone[k] <= counts[k] for k in zone)


def test_a_unit_larger_than_the_image_or_in_ha_without_crs(tmp_path: Path, write_raster: Callable[..., Path],
                                                           conv_model: Callable[..., Path]) -> None:
    scene = write_raster("scene.tif", np.ones((3, 40, 40), "uint8"))
    plain = write_raster("plain.tif", np.ones((3, 40, 40), "uint8"), crs=None)
    model = conv_model(in_channels=3, classes=3)
    for path, unit, message in ((scene, 1601, "min_mapping_unit is 1601 pixels, more than the whole image"),
                                (plain, "1 ha", "min_mapping_unit in ha needs ground areas")):
        wf = {"inputs": {"paths": [str(path)]},
              "model": {"type": "torchscript", "path": str(model), "in_channels": 3},
              "tiling": {"roi_size": [32, 32]}, "resources": {"backend": "local", "workers": 1},
              "output": {"directory": str(tmp_path / path.stem), "min_mapping_unit": unit}}
        spec = tmp_path / f"{path.stem}.yaml"
        spec.write_text(yaml.safe_dump(wf))
        assert main(["--no-progress", "run", str(spec)]) == 1
        text = (tmp_path / path.stem / "summary.csv").read_text()
        assert message in text and str(path) in text
        assert not list((tmp_path / path.stem / path.stem).glob(".scratch-*"))
