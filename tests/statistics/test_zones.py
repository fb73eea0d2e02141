"""Class areas per zone: pixels whose centre lies in a zone (checked with shapely on the pixel centres,
not GDAL's rasterizer), zones in another CRS, overlapping zones and scenes, bad zone files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas
import numpy as np
import pytest
import shapely
import statistic_contract as contract
from affine import Affine
from pyproj import CRS, Transformer

from geoseg_pipeline.errors import InputDataError
from geoseg_pipeline.geometry import Grid, Window
from geoseg_pipeline.statistics import Footprint, ZoneLayer, ZoneStats, ZoneTally, pixel_areas, read_zones
from geoseg_pipeline.stitching.consumer import BlockConsumer, LabelBlock

NAMES = ("water", "trees", "built")
UTM = Grid((60, 80), Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0), CRS.from_epsg(32632).to_wkt())


def labels_for(grid: Grid, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 3, (grid.height // 4 + 1, grid.width // 4 + 1))
    labels = np.kron(coarse, np.ones((4, 4), np.int64))[: grid.height, : grid.width].astype(np.uint8)
    labels[:5, :9] = 255
    return labels


def utm_zones() -> ZoneLayer:
    """Three zones on ``UTM`` with vertices off the pixel lattice: two overlap, one has a hole,
    one reaches past the map."""
    x0, y0 = 600000.0, 5000000.0
    a = shapely.Polygon([(x0 + 13.3, y0 - 7.1), (x0 + 377.7, y0 - 21.9), (x0 + 351.2, y0 - 433.4),
                         (x0 + 41.6, y0 - 402.8)], holes=[[(x0 + 150.5, y0 - 150.5), (x0 + 230.3, y0 - 150.5),
                                                          (x0 + 230.3, y0 - 260.7), (x0 + 150.5, y0 - 260.7)]])
    b = shapely.Polygon([(x0 + 300.4, y0 - 300.2), (x0 + 1000.3, y0 - 250.9), (x0 + 950.1, y0 - 700.4),
                         (x0 + 280.8, y0 - 640.6)])
    c = shapely.box(x0 + 500.5, y0 - 95.5, x0 + 1200.5, y0 + 500.5)  # half outside the map
    return ZoneLayer("zones", ("A", "B", "C"), np.array([a, b, c], dtype=object), UTM.crs)


def centre_reference(labels: np.ndarray, grid: Grid, layer: ZoneLayer, ignore: int = 255,
                     earlier: Any = None) -> dict[tuple[str, int], tuple[int, float, int]]:
    """``(zone, class) -> (pixels, area, own pixels)`` from the pixel centres, tested with shapely
    in the zones' own CRS (the centres are projected, not the zones)."""
    rows, cols = np.indices(grid.shape)
    x, y = grid.transform * (cols + 0.5, rows + 0.5)
    to_zone = Transformer.from_crs(CRS.from_user_input(grid.crs), CRS.from_user_input(layer.crs), always_xy=True)
    zx, zy = to_zone.transform(x, y)
    area = np.broadcast_to(pixel_areas(grid).row_area_m2[:, None], grid.shape)
    covered = shapely.contains_xy(earlier, x, y) if earlier is not None else np.zeros(grid.shape, bool)
    out = {}
    for zone, geom in zip(layer.ids, layer.geometries, strict=True):
        inside = shapely.contains_xy(geom, zx, zy) & (labels != ignore)
        for k in range(len(NAMES)):
            m = inside & (labels == k)
            out[(zone, k)] = (int(m.sum()), float(area[m].sum()), int((m & ~covered).sum()))
    return out


def feed(tally: ZoneTally, labels: np.ndarray, block: int = 16) -> tuple[ZoneStats, ...]:
    for window in contract.block_windows(labels.shape, (block, block)):
        tally.add(LabelBlock(window, labels[window.slices()]))
    return tally.finish()


class TestZoneTally(contract.BlockConsumerContract):
    block_shapes = ((16, 16), (23, 11))

    def make_consumer(self) -> BlockConsumer[Any]:
        return ZoneTally(utm_zones(), UTM, 3, NAMES, pixel_areas(UTM).row_area_m2, 255)

    def label_map(self) -> np.ndarray:
        return labels_for(UTM)

    def reference(self) -> Any:
        whole = self.make_consumer()
        whole.add(LabelBlock(Window((0, 0), UTM.shape), self.label_map()))
        return whole.finish()

    def test_pixels_whose_centre_lies_in_the_zone(self) -> None:
        labels = labels_for(UTM)
        got = {(z.zone, z.class_index): z for z in feed(self.make_consumer(), labels)}
        want = centre_reference(labels, UTM, utm_zones())
        assert {k for k, v in want.items() if any(x for x in v)} <= set(got)
        for key, (pixels, area, _) in want.items():
            assert got[key].pixels == pixels, key
            assert got[key].area_m2 == pytest.approx(area, rel=1e-12)
        # A and B overlap (the reference tests each zone on its own, so the overlap counts in both)
        assert shapely.intersection(*utm_zones().geometries[:2]).area / 100 > 20
        for zone in "ABC":
            shares = [z.share for z in got.values() if z.zone == zone]
            assert sum(shares) == pytest.approx(1.0)


def test_zones_in_another_crs_are_reprojected(tmp_path: Path) -> None:
    """Zones drawn in lon/lat on a UTM map: exactly the pixels whose centre, projected to lon/lat,
    lies in the zone are counted."""
    utm, lonlat = utm_zones(), CRS.from_epsg(4326)
    to_ll = Transformer.from_crs(CRS.from_user_input(UTM.crs), lonlat, always_xy=True)
    geoms = shapely.transform(utm.geometries, lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1])))
    path = tmp_path / "districts.gpkg"
    geopandas.GeoDataFrame({"NAME": list(utm.ids)}, geometry=list(geoms), crs="EPSG:4326").to_file(path)
    layer = read_zones(path, "NAME")
    assert layer.ids == ("A", "B", "C") and CRS.from_user_input(layer.crs) == lonlat
    labels = labels_for(UTM, seed=3)
    got = {(z.zone, z.class_index): z.pixels for z in feed(ZoneTally(layer, UTM, 3, NAMES, None, 255), labels)}
    want = centre_reference(labels, UTM, layer)
    assert got == {k: v[0] for k, v in want.items()}


def test_zones_that_share_an_edge_count_a_pixel_once() -> None:
    """Two districts of different sizes share an edge in lon/lat that runs across the map: every
    valid pixel whose centre is in either counts for exactly one of them."""
    to_ll = Transformer.from_crs(CRS.from_user_input(UTM.crs), CRS.from_epsg(4326), always_xy=True)
    (lon0, lon1), (lat1, lat0) = to_ll.transform([600000.0, 600800.0], [4999400.0, 5000000.0])
    mid = lon0 + 0.37123 * (lon1 - lon0)
    west = shapely.box(lon0 - 0.5, lat1 - 0.2, mid, lat0 + 0.2)  # far larger than its neighbour
    east = shapely.box(mid, lat1 - 0.01, lon1 + 0.01, lat0 + 0.01)
    layer = ZoneLayer("zones", ("west", "east"), np.array([west, east], dtype=object), CRS.from_epsg(4326).to_wkt())
    labels = np.zeros(UTM.shape, np.uint8)
    got = feed(ZoneTally(layer, UTM, 3, NAMES, None, 255), labels)
    assert sum(z.pixels for z in got) == labels.size  # the map lies inside the two districts
    assert all(z.pixels > 100 for z in got if z.class_index == 0)


def test_ground_an_earlier_scene_covers_is_not_own() -> None:
    earlier = Footprint(shapely.box(600000.0, 4999700.0, 600400.0, 5000100.0), UTM.crs)  # the top-left corner
    labels = labels_for(UTM, seed=5)
    tally = ZoneTally(utm_zones(), UTM, 3, NAMES, pixel_areas(UTM).row_area_m2, 255, [earlier])
    got = {(z.zone, z.class_index): z for z in feed(tally, labels)}
    want = centre_reference(labels, UTM, utm_zones(), earlier=earlier.polygon)
    for key, (pixels, _, own) in want.items():
        if pixels:
            assert (got[key].pixels, got[key].own_pixels) == (pixels, own), key
    assert any(z.own_pixels < z.pixels for z in got.values())
    assert all(z.own_area_m2 == pytest.approx(100.0 * z.own_pixels) for z in got.values())


def test_an_item_without_crs_is_refused() -> None:
    with pytest.raises(InputDataError, match="has no CRS"):
        ZoneTally(utm_zones(), Grid((10, 10)), 3, NAMES, None, 255)


def test_a_zone_layer_without_crs_is_refused_when_read(tmp_path: Path) -> None:
    """So that geoseg validate says so, rather than every item failing at run time."""
    with pytest.warns(UserWarning, match="'crs' was not provided"):
        geopandas.GeoDataFrame({"NAME": ["a"]}, geometry=[shapely.box(0, 0, 1, 1)]).to_file(tmp_path / "nocrs.gpkg")
    with pytest.raises(InputDataError, match=r"nocrs\.gpkg: has no CRS: the zones cannot be placed on any map"):
        read_zones(tmp_path / "nocrs.gpkg", "NAME")


def test_bad_zone_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match=r"missing\.gpkg"):
        read_zones(tmp_path / "missing.gpkg", "NAME")
    frame = geopandas.GeoDataFrame({"NAME": ["a", "a"], "CODE": [1, 2]},
                                   geometry=[shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1)], crs="EPSG:4326")
    path = tmp_path / "zones.gpkg"
    frame.to_file(path, layer="districts")
    with pytest.raises(InputDataError, match=r"no field 'DISTRICT'.*NAME"):
        read_zones(path, "DISTRICT")
    with pytest.raises(InputDataError, match=r"\['a'\] name more than one zone"):
        read_zones(path, "NAME")
    assert read_zones(path, "CODE").ids == ("1", "2")
    geopandas.GeoDataFrame({"NAME": ["x"]}, geometry=[shapely.Point(0, 0)], crs="EPSG:4326").to_file(
        path, layer="points")
    with pytest.raises(InputDataError, match="holds the layers"):
        read_zones(path, "CODE")
    with pytest.raises(InputDataError, match=r"must be polygons; 1 feature\(s\) are not, the first at feature #1 "
                                              r"\(NAME 'x': a Point\)"):
        read_zones(path, "NAME", layer="points")
    assert read_zones(path, "CODE", layer="districts").ids == ("1", "2")


def test_an_empty_zone_layer_is_refused(tmp_path: Path) -> None:
    """Every item's zone table would be empty: the wrong layer, or an export that kept nothing."""
    frame = geopandas.GeoDataFrame({"NAME": ["a"]}, geometry=[shapely.box(0, 0, 1, 1)], crs="EPSG:4326")
    frame.iloc[:0].to_file(tmp_path / "empty.gpkg")
    with pytest.raises(InputDataError, match=r"empty\.gpkg: the layer holds no features"):
        read_zones(tmp_path / "empty.gpkg", "NAME")


def test_zones_without_an_id_or_a_geometry_are_named(tmp_path: Path) -> None:
    """A NULL id would give rows with an empty zone name; a NULL geometry is no polygon."""
    boxes = [shapely.box(k, 0, k + 1, 1) for k in range(4)]
    geopandas.GeoDataFrame({"NAME": ["a", None, "c", None], "CODE": [1.0, 2.0, float("nan"), 4.0]},
                           geometry=boxes, crs="EPSG:4326").to_file(tmp_path / "z.gpkg")
    with pytest.raises(InputDataError, match=r"z\.gpkg: 2 feature\(s\) have no NAME \(NULL or blank\), the first "
                                              r"at feature #2, #4 in the file's order"):
        read_zones(tmp_path / "z.gpkg", "NAME")
    with pytest.raises(InputDataError, match=r"1 feature\(s\) have no CODE .* #3"):
        read_zones(tmp_path / "z.gpkg", "CODE")
    geopandas.GeoDataFrame({"NAME": ["a", "b"]}, geometry=[boxes[0], None], crs="EPSG:4326").to_file(
        tmp_path / "g.gpkg")
    with pytest.raises(InputDataError, match=r"1 feature\(s\) have no geometry \(NULL\), the first at feature #2 "
                                              r"\(NAME 'b'\)"):
        read_zones(tmp_path / "g.gpkg", "NAME")


def test_zones_off_the_map_or_over_nodata_only() -> None:
    """A zone beyond the map is not listed (no error); one over nodata only is, with zeros."""
    x0, y0 = 600000.0, 5000000.0
    far = shapely.box(x0 + 5000, y0 - 5000, x0 + 6000, y0 - 4000)
    blank = shapely.box(x0 + 1.0, y0 - 44.0, x0 + 80.0, y0 - 1.0)  # inside the nodata corner
    layer = ZoneLayer("zones", ("far", "blank"), np.array([far, blank], dtype=object), UTM.crs)
    got = feed(ZoneTally(layer, UTM, 3, NAMES, pixel_areas(UTM).row_area_m2, 255), labels_for(UTM))
    assert {z.zone for z in got} == {"blank"}
    assert [(z.pixels, z.area_m2, z.share) for z in got] == [(0, 0.0, 0.0)] * 3


def test_invalid_zone_polygons_are_repaired(tmp_path: Path) -> None:
    """A self-intersecting ring (a bow tie) is repaired (shapely make_valid), not refused: its
    two triangles count."""
    bowtie = shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 2), (0, 0)])
    assert not bowtie.is_valid
    path = tmp_path / "zones.gpkg"
    geopandas.GeoDataFrame({"NAME": ["tie"]}, geometry=[bowtie], crs="EPSG:32632").to_file(path)
    layer = read_zones(path, "NAME")
    (zone,) = layer.geometries
    assert zone.is_valid and zone.area == pytest.approx(2.0) and zone.geom_type == "MultiPolygon"


def test_footprints_tell_cheaply_which_scenes_can_overlap() -> None:
    here = Footprint.of(UTM)
    beside = Footprint.of(Grid(UTM.shape, Affine(10.0, 0.0, 600500.0, 0.0, -10.0, 4999800.0), UTM.crs))
    far = Footprint.of(Grid((10, 10), Affine(0.1, 0.0, 100.0, 0.0, -0.1, 10.0), CRS.from_epsg(4326).to_wkt()))
    assert here.may_overlap(beside) and beside.may_overlap(here)
    assert not here.may_overlap(far) and not far.may_overlap(here)
    assert here.may_overlap(Footprint.of(Grid((10, 10))))  # no CRS: cannot tell, so kept
