"""Polygon outputs: GeoParquet 1.1 and GeoPackage files as GDAL/OGR and geopandas read them, equal to
GDAL's polygonize of the whole map."""

from __future__ import annotations

import json
import random
from pathlib import Path

import geopandas
import numpy as np
import polygons
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely
from affine import Affine
from pyproj import CRS

from geoseg_pipeline.errors import SinkError
from geoseg_pipeline.geometry import Grid, Window
from geoseg_pipeline.sinks import ClassLegend
from geoseg_pipeline.sinks import vector as vector_sinks
from geoseg_pipeline.sinks.vector import GeoParquetSink, GpkgSink, VectorSink
from geoseg_pipeline.statistics import ClassTally, pixel_areas

LEGEND = ClassLegend(("background", "water", "built up"), ("#000000", "#0000ff", "#ff8000"))
UTM = Grid((90, 70), Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0), CRS.from_epsg(32632).to_wkt())
LONLAT = Grid((80, 60), Affine(0.05, 0.0, 10.0, 0.0, -0.05, 60.0), CRS.from_epsg(4326).to_wkt())


def landcover(shape_: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 3, (shape_[0] // 6 + 1, shape_[1] // 6 + 1))
    labels = np.kron(coarse, np.ones((6, 6), np.int64))[: shape_[0], : shape_[1]]
    speckle = rng.random(shape_) < 0.05
    labels = np.where(speckle, rng.integers(0, 3, shape_), labels).astype(np.uint8)
    labels[:7, :11] = 255  # no data in a corner, across a block border
    return labels


def write(sink: VectorSink, labels: np.ndarray, block: int = 16, seed: int = 0) -> Path:
    h, w = labels.shape
    windows = [Window((r, c), (min(block, h - r), min(block, w - c))) for r in range(0, h, block)
               for c in range(0, w, block)]
    random.Random(seed).shuffle(windows)
    for window in windows:
        sink.write(window, labels[window.slices()])
    return sink.commit()


def gdal_polygons(labels: np.ndarray, grid: Grid, connectivity: int = 4) -> list[tuple[int, object]]:
    return polygons.gdal_polygons(labels, grid.transform, 255, connectivity)


def test_geoparquet_metadata_follows_the_1_1_spec(tmp_path: Path) -> None:
    labels = landcover(UTM.shape)
    main = write(GeoParquetSink(tmp_path / "item", UTM, LEGEND, 255), labels)
    geo = json.loads(pq.read_metadata(main).metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB" and column["geometry_types"] == ["Polygon"]
    assert CRS.from_json_dict(column["crs"]) == CRS.from_user_input(UTM.crs)  # PROJJSON
    assert column["orientation"] == "counterclockwise" and column["edges"] == "planar"
    assert column["covering"] == {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}}
    frame = geopandas.read_parquet(main)
    assert column["bbox"] == pytest.approx(list(frame.total_bounds))
    table = pq.read_table(main)
    boxes = np.array([[b[k] for k in ("xmin", "ymin", "xmax", "ymax")] for b in table.column("bbox").to_pylist()])
    np.testing.assert_array_equal(boxes, shapely.bounds(frame.geometry.values))
    # counter-clockwise exteriors and clockwise holes, though the transform flips the y axis
    polygons = list(frame.geometry)
    assert all(p.exterior.is_ccw and not any(i.is_ccw for i in p.interiors) for p in polygons)
    assert any(p.interiors for p in polygons)
    assert table.column_names == ["class_index", "class_name", "pixels", "area_m2", "area_ha", "geometry", "bbox"]
    assert list(frame.columns) == table.column_names[:-1]  # geopandas knows the covering column


@pytest.mark.parametrize("sink_cls", [GeoParquetSink, GpkgSink])
def test_polygons_equal_gdal_polygonize_of_the_whole_map(tmp_path: Path, sink_cls: type[VectorSink]) -> None:
    labels = landcover(UTM.shape)
    main = write(sink_cls(tmp_path / "item", UTM, LEGEND, 255, row_area_m2=pixel_areas(UTM).row_area_m2), labels)
    frame = geopandas.read_parquet(main) if main.suffix == ".parquet" else geopandas.read_file(main)
    ref = gdal_polygons(labels, UTM)
    assert len(frame) == len(ref)
    polygons.assert_same_polygons(zip(frame.class_index, frame.geometry, strict=True), ref, 1e-6)
    assert set(frame.class_name) == {"background", "water", "built up"}
    np.testing.assert_array_equal(frame.area_m2, frame.pixels * 100.0)
    np.testing.assert_allclose(frame.area_ha, frame.area_m2 / 10_000)
    assert frame.pixels.sum() == (labels != 255).sum()


def test_gpkg_as_ogr_reads_it(tmp_path: Path) -> None:
    labels = landcover(UTM.shape)
    main = write(GpkgSink(tmp_path / "item", UTM, LEGEND, 255), labels, block=32)
    info = pyogrio.read_info(main, layer="labels")
    assert info["geometry_type"] == "Polygon" and info["features"] == len(gdal_polygons(labels, UTM))
    assert CRS.from_user_input(info["crs"]) == CRS.from_user_input(UTM.crs)
    assert list(info["fields"]) == ["class_index", "class_name", "pixels", "area_m2", "area_ha"]
    assert pyogrio.list_layers(main)[0][0] == "labels"


@pytest.mark.parametrize("sink_cls", [GeoParquetSink, GpkgSink])
def test_geodesic_areas_add_up_to_the_statistics(tmp_path: Path, sink_cls: type[VectorSink]) -> None:
    labels = landcover(LONLAT.shape, seed=4)
    areas = pixel_areas(LONLAT)
    assert areas.method == "geodesic"
    main = write(sink_cls(tmp_path / "item", LONLAT, LEGEND, 255, row_area_m2=areas.row_area_m2), labels, block=20)
    frame = geopandas.read_parquet(main) if main.suffix == ".parquet" else geopandas.read_file(main)
    tally = ClassTally(3, areas, LEGEND.names, "item")
    from geoseg_pipeline.stitching.consumer import LabelBlock

    tally.add(LabelBlock(Window((0, 0), LONLAT.shape), labels, labels != 255))
    stats = tally.finish()
    for cls in stats.classes:
        assert frame.area_m2[frame.class_index == cls.index].sum() == pytest.approx(cls.area_m2, rel=1e-12)
        assert frame.pixels[frame.class_index == cls.index].sum() == cls.pixels


@pytest.mark.parametrize("sink_cls", [GeoParquetSink, GpkgSink])
def test_eight_connected_regions_are_multipolygons(tmp_path: Path, sink_cls: type[VectorSink]) -> None:
    labels = landcover(UTM.shape, seed=2)
    sink = sink_cls(tmp_path / "item", UTM, LEGEND, 255, connectivity=8)
    main = write(sink, labels)
    frame = geopandas.read_parquet(main) if main.suffix == ".parquet" else geopandas.read_file(main)
    assert set(frame.geom_type) == {"MultiPolygon"} and frame.is_valid.all()
    assert len(frame) == len(gdal_polygons(labels, UTM, 8)) < len(gdal_polygons(labels, UTM, 4))
    if main.suffix == ".gpkg":
        assert pyogrio.read_info(main)["geometry_type"] == "MultiPolygon"


def test_simplify_keeps_polygons_valid_and_the_map_untouched(tmp_path: Path) -> None:
    labels = landcover(UTM.shape)
    exact = geopandas.read_parquet(write(GeoParquetSink(tmp_path / "a", UTM, LEGEND, 255), labels))
    simple = geopandas.read_parquet(write(GeoParquetSink(tmp_path / "b", UTM, LEGEND, 255, simplify=15.0), labels))
    assert len(simple) == len(exact) and simple.is_valid.all()
    assert shapely.get_num_coordinates(simple.geometry.values).sum() < shapely.get_num_coordinates(
        exact.geometry.values).sum()
    np.testing.assert_array_equal(simple.pixels, exact.pixels)  # the attributes are the map's


@pytest.mark.parametrize("sink_cls", [GeoParquetSink, GpkgSink])
def test_a_map_without_valid_pixels_gives_an_empty_layer(tmp_path: Path, sink_cls: type[VectorSink]) -> None:
    main = write(sink_cls(tmp_path / "item", UTM, LEGEND, 255), np.full(UTM.shape, 255, np.uint8))
    frame = geopandas.read_parquet(main) if main.suffix == ".parquet" else geopandas.read_file(main)
    assert len(frame) == 0 and "class_name" in frame.columns
    assert CRS.from_user_input(frame.crs) == CRS.from_user_input(UTM.crs)


def test_no_crs_and_no_areas(tmp_path: Path) -> None:
    grid = Grid((40, 40))
    main = write(GeoParquetSink(tmp_path / "item", grid, LEGEND, 255), landcover(grid.shape))
    assert json.loads(pq.read_metadata(main).metadata[b"geo"])["columns"]["geometry"]["crs"] is None
    frame = geopandas.read_parquet(main)
    assert frame.area_m2.isna().all() and frame.area_ha.isna().all() and (frame.pixels > 0).all()


def test_missing_extra_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyogrio", None)  # import pyogrio raises ImportError
    with pytest.raises(SinkError, match=r"pip install 'geoseg-pipeline\[vector\]'"):
        vector_sinks.GpkgSink(tmp_path / "item", UTM, LEGEND, 255)
    assert not (tmp_path / "item").exists() or not any((tmp_path / "item").iterdir())
    # the GeoParquet sink does not need pyogrio (it carries a GDAL of its own)
    vector_sinks.GeoParquetSink(tmp_path / "other", UTM, LEGEND, 255).abort()
