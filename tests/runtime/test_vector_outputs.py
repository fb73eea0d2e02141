"""`geoseg predict --vector`: polygons of a real scene's label map, produced while it is stitched, equal
GDAL's polygonize of the published COG, with areas that add up to the item's statistics."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import geopandas
import polygons
import pytest
import rasterio
import shapely
from pyproj import CRS
from rasterio import features
from shapely.geometry import shape

from geoseg_pipeline.cli import main

DATA = Path(__file__).resolve().parents[1] / "data" / "real"


def assert_polygons_of(labels_tif: Path, frame: geopandas.GeoDataFrame) -> None:
    """``frame`` holds GDAL's polygons of the published label map, vertex for vertex."""
    with rasterio.open(labels_tif) as ds:
        labels, nodata, transform, crs = ds.read(1), ds.nodata, ds.transform, ds.crs
    assert CRS.from_user_input(frame.crs) == CRS.from_user_input(crs.to_wkt())
    polygons.assert_same_polygons(zip(frame.class_index, frame.geometry, strict=True),
                                  polygons.gdal_polygons(labels, transform, int(nodata)), 1e-6 * abs(transform.a))
    assert int(frame.pixels.sum()) == int((labels != nodata).sum())


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_predict_vector_on_a_landsat_scene(tmp_path: Path, conv_model: Callable[..., Path], backend: str,
                                           request: pytest.FixtureRequest) -> None:
    if backend == "ray":
        request.getfixturevalue("ray_local")
    scene = DATA / "RGB.byte.tif"  # 791 x 718 Landsat RGB in UTM, nodata 0 around the scene
    model = conv_model(in_channels=3, classes=3, seed=5)
    out = tmp_path / "out"
    argv = ["--no-progress", "predict", str(scene), "--model", str(model), "--out", str(out), "--roi-size", "64",
            "--block-size", "128", "--workers", "2", "--classes", "water,forest,urban",
            "--vector", "geoparquet", "--vector", "gpkg"]
    if backend == "ray":
        argv += ["--address", "auto"]
    assert main(argv) == 0
    item = out / "RGB.byte"
    assert {p.name for p in item.iterdir()} >= {"labels.tif", "labels.parquet", "labels.gpkg", "stats.json"}
    parquet = geopandas.read_parquet(item / "labels.parquet")
    gpkg = geopandas.read_file(item / "labels.gpkg", layer="labels")
    assert_polygons_of(item / "labels.tif", parquet)
    assert_polygons_of(item / "labels.tif", gpkg)
    stats = json.loads((item / "stats.json").read_text())
    for cls in stats["classes"]:
        mine = parquet[parquet.class_index == cls["class_index"]]
        assert set(mine.class_name) <= {cls["class_name"]}
        assert int(mine.pixels.sum()) == cls["pixels"]
        assert mine.area_m2.sum() == pytest.approx(cls["area_m2"], rel=1e-12)


def test_workflow_options_connectivity_and_simplify(tmp_path: Path, conv_model: Callable[..., Path]) -> None:
    import yaml

    model = conv_model(in_channels=3, classes=3, seed=5)
    wf = {
        "inputs": {"paths": [str(DATA / "RGB.byte.tif")]},
        "model": {"type": "torchscript", "path": str(model), "in_channels": 3, "num_classes": 3},
        "tiling": {"roi_size": [64, 64], "block_size": 128},
        "output": {"directory": str(tmp_path / "out"), "formats": ["cog", "geoparquet"], "connectivity": 8,
                   "simplify": 450.0},
        "resources": {"backend": "local", "workers": 1},
    }
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(wf))
    assert main(["--no-progress", "run", str(path)]) == 0
    item = tmp_path / "out" / "RGB.byte"
    frame = geopandas.read_parquet(item / "labels.parquet")
    assert set(frame.geom_type) == {"MultiPolygon"} and frame.is_valid.all()
    with rasterio.open(item / "labels.tif") as ds:
        labels = ds.read(1)
    regions8 = sum(1 for _ in features.shapes(labels, mask=labels != 255, connectivity=8))
    assert len(frame) == regions8
    # simplified: fewer vertices than GDAL's exact rings, the attributes still the map's
    exact = sum(shapely.get_num_coordinates(shapely.make_valid(shape(g), method="structure"))
                for g, _ in features.shapes(labels, mask=labels != 255, connectivity=8))
    assert shapely.get_num_coordinates(frame.geometry.values).sum() < exact
    assert int(frame.pixels.sum()) == int((labels != 255).sum())


def test_vector_options_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    wf = {"inputs": {"paths": ["x.tif"]}, "model": {"type": "torchscript", "path": "m.pt"},
          "output": {"directory": "o", "formats": ["geoparquet"], "connectivity": 6, "simplify": -1}}
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(wf))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "output.connectivity" in err and "output.simplify" in err
    wf["tiling"] = {"roi_size": [16, 16, 16]}
    wf["output"] = {"directory": "o", "formats": ["gpkg"]}
    path.write_text(yaml.safe_dump(wf))
    assert main(["validate", str(path)]) == 2
    assert "'gpkg' is not an output of volumes" in capsys.readouterr().err
