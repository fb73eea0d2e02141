"""STAC outputs (``OUT/<item>/item.json``, ``OUT/collection.json``) for real COGs written by the COG
sink: valid against the STAC 1.1.0 and extension schemas shipped in ``tests/data/stac-schemas``
(no network: every ``$ref`` must resolve there), readable by pystac, and with a footprint that
agrees with pyproj."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from pyproj import CRS, Transformer
from pystac.extensions.classification import ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from rasterio.features import shapes
from stac_schemas import COLLECTION_SCHEMA, ITEM_SCHEMA, SCHEMAS, assert_valid, errors, registry, shipped

from geoseg_pipeline.geometry import Grid, Window
from geoseg_pipeline.report.stac import (
    EXTENSIONS,
    MAX_VERTICES,
    StacError,
    StacInfo,
    classes,
    footprint,
    geometry_bbox,
    read_shape,
    union_bbox,
    write_collection,
    write_item_stac,
)
from geoseg_pipeline.sinks import ClassLegend, CogLabelSink
from geoseg_pipeline.storage import atomic_write_text
from geoseg_pipeline.version import __version__

LEGEND = ClassLegend(("water", "trees & shrubs", "built <up>"), ("#0000FF", "#00a000", "#ff8000"))
UTM33 = CRS.from_epsg(32633).to_wkt()
MODEL = "c0ffee" * 10 + "abcd"
WHEN = datetime(2024, 7, 1, 10, 30, tzinfo=timezone.utc)
PROCESSED = datetime(2026, 12, 5, 5, 0, tzinfo=timezone.utc)


def _cog(out_dir: Path, labels: np.ndarray, transform: Affine, crs: str, nodata: int = 255) -> Path:
    """``out_dir/labels.tif`` through the COG sink, in 512-pixel blocks."""
    h, w = labels.shape
    sink = CogLabelSink(out_dir, Grid((h, w), transform, crs), LEGEND, nodata)
    for r in range(0, h, 512):
        for c in range(0, w, 512):
            win = Window((r, c), (min(512, h - r), min(512, w - c)))
            sink.write(win, labels[win.slices()])
    return sink.commit()


def _info(**kw: Any) -> StacInfo:
    return StacInfo(**{"collection_id": "landcover-job", "model_hash": MODEL, "processed": PROCESSED, **kw})


def _shoelace(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return float(abs(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])) / 2)


@pytest.fixture(scope="module")
def utm_item(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, Affine]:
    """A 2048² UTM 33N map (10 m) whose data is the rectangle rows 200:1400, cols 300:1800, with
    a stats.json and a report.html beside it."""
    out = tmp_path_factory.mktemp("out") / "scene-a"
    labels = np.full((2048, 2048), 255, np.uint8)
    rows, cols = np.indices((1200, 1500))
    labels[200:1400, 300:1800] = (rows // 100 + cols // 100) % 3
    transform = Affine(10.0, 0.0, 400000.0, 0.0, -10.0, 5_100_000.0)
    _cog(out, labels, transform, UTM33)
    atomic_write_text(out / "stats.json", '{"classes": []}\n')
    atomic_write_text(out / "report.html", "<!doctype html><title>r</title>\n")
    return out, labels, transform


def test_the_shipped_schemas_resolve_every_ref_offline() -> None:
    shipped_registry = registry()
    for url in [ITEM_SCHEMA, COLLECTION_SCHEMA, *EXTENSIONS.values()]:
        assert url in shipped_registry, f"{url} is not shipped in {SCHEMAS}"

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    checked = 0
    for uri, contents in shipped().items():
        resolver = shipped_registry.resolver(base_uri=uri)
        for ref in refs(contents):
            resolver.lookup(ref)  # raises referencing.exceptions.Unresolvable
            checked += 1
    assert checked > 50


def test_item_is_valid_stac_and_reads_with_pystac(utm_item: tuple[Path, np.ndarray, Affine]) -> None:
    out, _, transform = utm_item
    info = _info(model_name="unet-s2", source_href="../../catalog/S2A_T33/S2A_T33.json", source_datetime=WHEN)
    path = write_item_stac(out, "scene-a", out / "labels.tif", LEGEND, 255, info)
    assert path == out / "item.json"
    doc = assert_valid(path)

    p = doc["properties"]
    assert (p["datetime"], p["created"], p["processing:datetime"]) == ("2024-07-01T10:30:00Z", "2026-12-05T05:00:00Z",
                                                                       "2026-12-05T05:00:00Z")
    assert p["proj:code"] == "EPSG:32633" and "proj:wkt2" not in p
    assert p["proj:shape"] == [2048, 2048]
    assert p["proj:transform"] == [10.0, 0.0, 400000.0, 0.0, -10.0, 5_100_000.0]
    assert p["proj:bbox"] == [400000.0, 5_100_000.0 - 20480, 400000.0 + 20480, 5_100_000.0]
    assert p["processing:software"] == {"geoseg-pipeline": __version__}
    assert MODEL in p["processing:lineage"] and "unet-s2" in p["processing:lineage"]
    assert doc["collection"] == "landcover-job"
    assert {(link["rel"], link["href"]) for link in doc["links"]} == {
        ("root", "../collection.json"), ("parent", "../collection.json"), ("collection", "../collection.json"),
        ("derived_from", "../../catalog/S2A_T33/S2A_T33.json")}

    labels = doc["assets"]["labels"]
    assert (labels["href"], labels["type"], labels["roles"]) == (
        "./labels.tif", "image/tiff; application=geotiff; profile=cloud-optimized", ["data"])
    assert labels["bands"] == [{"name": "class", "nodata": 255, "data_type": "uint8", "raster:sampling": "area",
                                "raster:spatial_resolution": 10.0}]
    data = (out / "labels.tif").read_bytes()
    assert labels["file:size"] == len(data)
    assert labels["file:checksum"] == "1220" + hashlib.sha256(data).hexdigest()
    for key, name in (("stats", "stats.json"), ("report", "report.html")):
        assert doc["assets"][key]["href"] == f"./{name}"
        assert doc["assets"][key]["file:checksum"] == "1220" + hashlib.sha256((out / name).read_bytes()).hexdigest()
    assert "stats_csv" not in doc["assets"]  # not written: not listed

    item = pystac.Item.from_file(str(path))
    assert item.id == "scene-a" and item.collection_id == "landcover-job"
    assert item.datetime == WHEN
    assert ProjectionExtension.ext(item).code == "EPSG:32633"
    assert ProjectionExtension.ext(item).transform == list(transform)[:6]
    got = ClassificationExtension.ext(item.assets["labels"]).classes
    assert got is not None
    assert [(c.value, c.name, c.color_hint, c.nodata) for c in got] == [
        (0, "water", "0000ff", None), (1, "trees_shrubs", "00a000", None), (2, "built_up", "ff8000", None),
        (255, "nodata", None, True)]
    assert item.assets["labels"].get_absolute_href() == str(out / "labels.tif")


def test_footprint_of_a_rectangle_agrees_with_pyproj(utm_item: tuple[Path, np.ndarray, Affine]) -> None:
    """Read from the 1024² overview (the rectangle's edges fall on its pixel edges): every vertex
    lies on the rectangle's outline in UTM, and the bbox is pyproj's of the densely sampled outline."""
    out, _, transform = utm_item
    with rasterio.open(out / "labels.tif") as ds:
        assert read_shape(ds.height, ds.width, ds.overviews(1), 1024) == (1024, 1024)
    geometry = footprint(out / "labels.tif", 255)
    assert geometry is not None and geometry["type"] == "Polygon" and len(geometry["coordinates"]) == 1
    (x0, y1), (x1, y0) = transform * (300, 200), transform * (1800, 1400)

    back = Transformer.from_crs("EPSG:4326", UTM33, always_xy=True)
    ring = np.array(back.transform(*np.array(geometry["coordinates"][0]).T)).T
    on_x = np.minimum(abs(ring[:, 0] - x0), abs(ring[:, 0] - x1)) < 1e-3
    on_y = np.minimum(abs(ring[:, 1] - y0), abs(ring[:, 1] - y1)) < 1e-3
    inside = (ring[:, 0] > x0 - 1e-3) & (ring[:, 0] < x1 + 1e-3) & (ring[:, 1] > y0 - 1e-3) & (ring[:, 1] < y1 + 1e-3)
    assert np.all((on_x | on_y) & inside)
    assert _shoelace(ring) == pytest.approx((x1 - x0) * (y1 - y0), abs=1.0)  # 1e-9° rounding: 0.1 mm a vertex
    assert len(ring) > 64  # densified, not just the four corners

    t = np.linspace(0.0, 1.0, 2001)
    xs = np.concatenate([x0 + (x1 - x0) * t, np.full_like(t, x1), x1 - (x1 - x0) * t, np.full_like(t, x0)])
    ys = np.concatenate([np.full_like(t, y1), y1 - (y1 - y0) * t, np.full_like(t, y0), y0 + (y1 - y0) * t])
    lon, lat = Transformer.from_crs(UTM33, "EPSG:4326", always_xy=True).transform(xs, ys)
    assert geometry_bbox(geometry) == pytest.approx([lon.min(), lat.min(), lon.max(), lat.max()], abs=1e-7)


def test_footprint_of_an_l_shape_with_a_hole(tmp_path: Path) -> None:
    """Full resolution (the map fits 1024): the L's outline and its hole come back as drawn."""
    labels = np.full((300, 400), 255, np.uint8)
    labels[50:250, 40:120] = 1  # the L's upright
    labels[180:250, 120:360] = 2  # its foot
    labels[100:140, 60:100] = 255  # a hole (cloud) in the upright
    transform = Affine(20.0, 0.0, 500000.0, 0.0, -20.0, 4_500_000.0)
    _cog(tmp_path / "l", labels, transform, UTM33)
    geometry = footprint(tmp_path / "l" / "labels.tif", 255)
    assert geometry is not None and geometry["type"] == "Polygon"
    back = Transformer.from_crs("EPSG:4326", UTM33, always_xy=True)
    outer, hole = (np.array(back.transform(*np.array(r).T)).T for r in geometry["coordinates"])
    assert _shoelace(outer) == pytest.approx((200 * 80 + 70 * 240) * 400, abs=1.0)  # 1e-9° rounding: 0.1 mm a vertex
    assert _shoelace(hole) == pytest.approx(40 * 40 * 400, abs=1.0)  # 1e-9° rounding: 0.1 mm a vertex
    corners = {(round(x), round(y)) for x, y in outer}
    expected = [transform * (c, r) for c, r in ((40, 50), (120, 50), (120, 180), (360, 180), (360, 250), (40, 250))]
    assert {(round(x), round(y)) for x, y in expected} <= corners
    top_right = transform * (360, 50)  # the corner of the L's bbox, not of the L
    assert (round(top_right[0]), round(top_right[1])) not in corners


def test_all_nodata_map_has_null_geometry_and_no_bbox(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    _cog(out, np.full((64, 64), 255, np.uint8), Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 5e6), UTM33)
    doc = assert_valid(write_item_stac(out, "empty", out / "labels.tif", LEGEND, 255, _info()))
    assert doc["geometry"] is None and "bbox" not in doc
    assert doc["properties"]["datetime"] == "2026-12-05T05:00:00Z"  # no source time: the processing time
    assert any("bbox" in e for e in errors({**doc, "bbox": [0, 0, 1, 1]}))  # the schema forbids it: checked
    pystac.Item.from_file(str(out / "item.json"))


def test_sixteen_bit_map(tmp_path: Path) -> None:
    out = tmp_path / "u16"
    labels = np.full((40, 50), 65535, np.uint16)
    labels[5:35, 5:45] = 2
    _cog(out, labels, Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 5e6), UTM33, nodata=65535)
    doc = assert_valid(write_item_stac(out, "u16", out / "labels.tif", LEGEND, 65535, _info()))
    asset = doc["assets"]["labels"]
    assert (asset["bands"][0]["data_type"], asset["bands"][0]["nodata"]) == ("uint16", 65535)
    assert asset["classification:classes"][-1] == {"value": 65535, "name": "nodata", "title": "no data",
                                                   "nodata": True}


def test_geographic_map(tmp_path: Path) -> None:
    out = tmp_path / "geo"
    labels = np.full((100, 200), 255, np.uint8)
    labels[10:90, 20:180] = 0
    transform = Affine(0.01, 0.0, 10.0, 0.0, -0.01, 50.0)
    _cog(out, labels, transform, CRS.from_epsg(4326).to_wkt())
    doc = assert_valid(write_item_stac(out, "geo", out / "labels.tif", LEGEND, 255, _info()))
    assert doc["properties"]["proj:code"] == "EPSG:4326"
    assert doc["bbox"] == pytest.approx([10.2, 49.1, 11.8, 49.9], abs=1e-9)
    assert "raster:spatial_resolution" not in doc["assets"]["labels"]["bands"][0]  # degrees, not metres


def test_crs_without_an_epsg_code_gets_wkt2(tmp_path: Path) -> None:
    crs = CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=12.3456 +k=0.9995 +x_0=250000 +y_0=0 +ellps=GRS80 +units=m")
    out = tmp_path / "custom"
    labels = np.zeros((80, 60), np.uint8)
    labels[:, :10] = 255
    transform = Affine(30.0, 0.0, 250000.0, 0.0, -30.0, 5_300_000.0)
    _cog(out, labels, transform, crs.to_wkt())
    doc = assert_valid(write_item_stac(out, "custom", out / "labels.tif", LEGEND, 255, _info()))
    p = doc["properties"]
    assert p["proj:code"] is None
    assert CRS.from_wkt(p["proj:wkt2"]).equals(crs)
    assert ProjectionExtension.ext(pystac.Item.from_file(str(out / "item.json"))).wkt2 == p["proj:wkt2"]
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(
        [250000 + 300, 250000 + 1800], [5_300_000 - 2400, 5_300_000])
    assert doc["bbox"][0] == pytest.approx(min(lon), abs=1e-4)
    assert doc["bbox"][3] == pytest.approx(max(lat), abs=1e-4)


def test_map_across_the_antimeridian(tmp_path: Path) -> None:
    """UTM 60N (central meridian 177° E), x 700-900 km at 9° N: data from about 178.8° E to 180.6°."""
    out = tmp_path / "fiji"
    _cog(out, np.ones((200, 200), np.uint8), Affine(1000.0, 0.0, 700000.0, 0.0, -1000.0, 1_100_000.0),
         CRS.from_epsg(32660).to_wkt())
    doc = assert_valid(write_item_stac(out, "fiji", out / "labels.tif", LEGEND, 255, _info()))
    assert doc["geometry"]["type"] == "MultiPolygon"
    west, south, east, north = doc["bbox"]
    assert 178.0 < west < 179.5 and -179.9 < east < -179.0 and west > east
    assert 8.0 < south < north < 10.5
    assert geometry_bbox(doc["geometry"]) == doc["bbox"]


def test_a_speckled_mask_is_traced_from_a_coarser_read(tmp_path: Path) -> None:
    labels = np.where(np.random.default_rng(0).random((256, 256)) < 0.5, 1, 255).astype(np.uint8)
    out = tmp_path / "speckle"
    _cog(out, labels, Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5e6), UTM33)
    full = [g["coordinates"] for g, _ in shapes(labels, mask=labels != 255)]
    full_vertices = sum(len(ring) for polygon in full for ring in polygon)
    assert full_vertices > MAX_VERTICES
    geometry = footprint(out / "labels.tif", 255)
    assert geometry is not None and geometry["type"] == "MultiPolygon"
    assert 0 < len(geometry["coordinates"]) < len(full) / 2
    assert sum(len(ring) for polygon in geometry["coordinates"] for ring in polygon) < full_vertices


def test_a_small_patch_of_data_is_not_lost_in_a_coarse_read(tmp_path: Path) -> None:
    """A plain GeoTIFF without overviews read at 1/16: the 3 × 3 patch misses every sampled pixel,
    so the cells are found at full resolution."""
    labels = np.full((1024, 1024), 255, np.uint8)
    labels[100:103, 201:204] = 1
    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5e6)
    path = tmp_path / "labels.tif"
    with rasterio.open(path, "w", driver="GTiff", width=1024, height=1024, count=1, dtype="uint8", crs=UTM33,
                       transform=transform, nodata=255, tiled=True) as ds:
        ds.write(labels, 1)
    with rasterio.open(path) as ds:
        assert not (ds.read(1, out_shape=(64, 64)) != 255).any()
    geometry = footprint(path, 255, max_px=64)
    assert geometry is not None and geometry["type"] == "Polygon"
    back = Transformer.from_crs("EPSG:4326", UTM33, always_xy=True)
    ring = np.array(back.transform(*np.array(geometry["coordinates"][0]).T)).T
    assert _shoelace(ring) == pytest.approx(160 * 160, abs=1.0)  # one cell of 16 × 16 pixels of 10 m
    x, y = transform * (201, 100)
    assert ring[:, 0].min() - 1e-3 <= x <= ring[:, 0].max() and ring[:, 1].min() <= y <= ring[:, 1].max() + 1e-3


def test_collection_lists_items_with_their_extent(tmp_path: Path,
                                                  utm_item: tuple[Path, np.ndarray, Affine]) -> None:
    root = tmp_path / "OUT"
    a = root / "a"
    labels = np.zeros((100, 100), np.uint8)
    _cog(a, labels, Affine(0.01, 0.0, -5.0, 0.0, -0.01, 40.0), CRS.from_epsg(4326).to_wkt())
    write_item_stac(a, "a", a / "labels.tif", LEGEND, 255, _info(source_datetime=WHEN - timedelta(days=3)))
    b = root / "b"
    _cog(b, labels, Affine(0.02, 0.0, 20.0, 0.0, -0.02, -10.0), CRS.from_epsg(4326).to_wkt())
    nine_days = _info(source_start=WHEN, source_end=WHEN + timedelta(days=9))
    write_item_stac(b, "b", b / "labels.tif", LEGEND, 255, nine_days)
    empty = root / "empty"
    _cog(empty, np.full((32, 32), 255, np.uint8), Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 5e6), UTM33)
    write_item_stac(empty, "empty", empty / "labels.tif", LEGEND, 255, _info())
    assert_valid(a / "item.json")
    b_doc = assert_valid(b / "item.json")
    assert (b_doc["properties"]["datetime"], b_doc["properties"]["end_datetime"]) == (None, "2024-07-10T10:30:00Z")

    path = write_collection(root, "landcover-job", [a / "item.json", b / "item.json", empty / "item.json"], LEGEND,
                            "Land cover of three scenes", nodata_label=255, title="Land cover")
    doc = assert_valid(path)
    assert doc["extent"]["spatial"]["bbox"] == [pytest.approx([-5.0, -12.0, 22.0, 40.0], abs=1e-9)]
    assert doc["extent"]["temporal"]["interval"] == [["2024-06-28T10:30:00Z", "2026-12-05T05:00:00Z"]]
    assert [(link["rel"], link["href"]) for link in doc["links"]] == [
        ("root", "./collection.json"), ("item", "./a/item.json"), ("item", "./b/item.json"),
        ("item", "./empty/item.json")]
    assert doc["summaries"]["classification:classes"] == classes(LEGEND, 255)

    collection = pystac.Collection.from_file(str(path))
    assert [i.id for i in collection.get_items()] == ["a", "b", "empty"]
    assert collection.extent.spatial.bboxes == [doc["extent"]["spatial"]["bbox"][0]]

    with pytest.raises(StacError, match="below"):
        write_collection(root, "x", [utm_item[0] / "item.json"], LEGEND, "d", nodata_label=255)
    atomic_write_text(root / "bad" / "item.json", "{not json")
    with pytest.raises(StacError, match=r"bad/item.json: cannot read"):
        write_collection(root, "x", [root / "bad" / "item.json"], LEGEND, "d", nodata_label=255)


def test_empty_collection_covers_the_world(tmp_path: Path) -> None:
    doc = assert_valid(write_collection(tmp_path, "none", [], LEGEND, "Nothing yet", nodata_label=255))
    assert doc["extent"] == {"spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
                             "temporal": {"interval": [[None, None]]}}


def test_union_bbox_takes_the_shorter_way_round() -> None:
    assert union_bbox([[170.0, -20.0, 175.0, -15.0], [-178.0, -18.0, -175.0, -10.0]]) == [170.0, -20.0, -175.0, -10.0]
    assert union_bbox([[178.0, 0.0, -179.0, 1.0], [10.0, 0.0, 11.0, 1.0]]) == [10.0, 0.0, -179.0, 1.0]
    assert union_bbox([[-10.0, 0.0, 10.0, 1.0], [20.0, -5.0, 30.0, 2.0]]) == [-10.0, -5.0, 30.0, 2.0]


def test_classes_names_nodata_and_colours() -> None:
    legend = ClassLegend(("crop land", "crop/land", "", "nodata"), ("#AABBCC", "#000000", "#111111", "#222222"))
    got = classes(legend, 0)
    assert [(c["value"], c["name"], c.get("nodata")) for c in got] == [
        (0, "crop_land", True), (1, "crop_land_2", None), (2, "class_2", None), (3, "nodata", None)]
    assert got[0]["color_hint"] == "aabbcc" and got[1]["title"] == "crop/land"
    assert classes(legend, 65535)[-1] == {"value": 65535, "name": "nodata_2", "title": "no data", "nodata": True}


def test_read_shape_prefers_a_fitting_overview() -> None:
    assert read_shape(900, 700, [2, 4], 1024) == (900, 700)
    assert read_shape(10980, 10980, [2, 4, 8, 16], 1024) == (687, 687)
    assert read_shape(5000, 3000, [], 1024) == (1000, 600)


@pytest.mark.parametrize("kw, match", [
    ({"source_datetime": datetime(2024, 1, 1)}, "time-zone aware"),
    ({"source_start": WHEN}, "both"),
    ({"source_start": WHEN, "source_end": WHEN - timedelta(seconds=1)}, "after"),
    ({"collection_id": ""}, "collection_id"),
])
def test_stac_info_rejects(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(StacError, match=match):
        _info(**kw)
