"""Regions tracked block by block equal GDAL's polygonize of the whole map at once."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio import features
from shapely.geometry import shape

from geoseg_pipeline.geometry import Window
from geoseg_pipeline.sinks.regions import Region, RegionTracker, block_regions, regions_of


def gdal_regions(labels: np.ndarray, connectivity: int, ignore: int | None) -> list[tuple[int, object]]:
    """GDAL's polygonize of the whole map (pixel space), rings made valid for 8-connectivity."""
    mask = None if ignore is None else labels != ignore
    out = []
    for geom, value in features.shapes(labels.astype(np.int32), mask=mask, connectivity=connectivity):
        polygon = shape(geom)
        if not polygon.is_valid:
            polygon = shapely.make_valid(polygon, method="structure")
        out.append((int(value), polygon))
    return out


def split(window: Window, rng: random.Random, depth: int) -> list[Window]:
    """A random guillotine partition of ``window`` (blocks of unequal sizes, not a grid)."""
    (r0, c0), (h, w) = window.start, window.size
    if depth == 0 or (h < 2 and w < 2):
        return [window]
    if h >= 2 and (w < 2 or rng.random() < 0.5):
        k = rng.randint(1, h - 1)
        parts = [Window((r0, c0), (k, w)), Window((r0 + k, c0), (h - k, w))]
    else:
        k = rng.randint(1, w - 1)
        parts = [Window((r0, c0), (h, k)), Window((r0, c0 + k), (h, w - k))]
    return [b for p in parts for b in split(p, rng, depth - 1)]


def grid_blocks(shape_: tuple[int, int], block: int) -> list[Window]:
    h, w = shape_
    return [Window((r, c), (min(block, h - r), min(block, w - c))) for r in range(0, h, block)
            for c in range(0, w, block)]


def normal(geometry: object) -> str:
    return shapely.normalize(geometry).wkt


def assert_same(ours: list[Region], labels: np.ndarray, connectivity: int, ignore: int | None) -> None:
    ref = gdal_regions(labels, connectivity, ignore)
    assert len(ours) == len(ref)
    for region in ours:
        assert region.geometry.is_valid
        assert region.pixels == round(region.geometry.area)
    if connectivity == 4:
        # the same polygons, vertex for vertex: no vertex left on a block seam
        assert sorted((r.class_index, normal(r.geometry)) for r in ours) == sorted((v, normal(g)) for v, g in ref)
        assert all(r.geometry.geom_type == "Polygon" for r in ours)
    else:
        assert all(r.geometry.geom_type == "MultiPolygon" for r in ours)
        ref_sets = sorted((v, normal(shapely.simplify(shapely.union_all(shapely.get_parts(g)), 0))) for v, g in ref)
        our_sets = sorted((r.class_index, normal(shapely.simplify(shapely.union_all(shapely.get_parts(r.geometry)), 0)))
                          for r in ours)
        assert our_sets == ref_sets


@st.composite
def maps(draw: st.DrawFn) -> tuple[np.ndarray, list[Window]]:
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    classes = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, classes, (h // 2 + 1, w // 2 + 1))
    labels = np.kron(coarse, np.ones((2, 2), np.int64))[:h, :w]
    noise = rng.random((h, w)) < draw(st.sampled_from([0.0, 0.2]))
    labels = np.where(noise, rng.integers(0, classes, (h, w)), labels).astype(np.uint8)
    blocks = split(Window((0, 0), (h, w)), random.Random(seed), draw(st.integers(0, 6)))
    random.Random(seed + 1).shuffle(blocks)
    return labels, blocks


@settings(max_examples=150, deadline=None)
@given(case=maps(), connectivity=st.sampled_from([4, 8]), ignore=st.sampled_from([None, 0]))
def test_blocks_in_any_order_and_cut_give_gdal_polygons(case: tuple[np.ndarray, list[Window]], connectivity: int,
                                                        ignore: int | None) -> None:
    labels, blocks = case
    assert_same(regions_of(labels, blocks, connectivity=connectivity, ignore=ignore), labels, connectivity, ignore)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_a_region_across_many_blocks_is_one_polygon_with_its_holes(connectivity: int) -> None:
    labels = np.zeros((64, 64), np.uint8)
    labels[4:60, 4:60] = 1  # a square ring of class 1 across 16 blocks ...
    labels[20:44, 20:44] = 2  # ... around a hole of class 2
    labels[30:34, 30:34] = 1  # ... with an island of class 1 in the hole
    blocks = grid_blocks(labels.shape, 16)
    ours = regions_of(labels, blocks, connectivity=connectivity, ignore=0)
    assert_same(ours, labels, connectivity, 0)
    ring = max(ours, key=lambda r: r.pixels)
    assert ring.class_index == 1 and ring.pixels == 56 * 56 - 24 * 24
    polygon = shapely.get_parts(ring.geometry)[0]
    assert len(polygon.exterior.coords) == 5 and len(polygon.interiors) == 1  # no seam vertices


def test_regions_are_handed_out_as_soon_as_they_are_complete() -> None:
    """Memory follows the frontier of arrived blocks: rows of blocks in order hold only the
    regions touching the last row."""
    rng = np.random.default_rng(3)
    labels = np.kron(rng.integers(0, 3, (32, 32)), np.ones((4, 4), np.int64)).astype(np.uint8)
    tracker = RegionTracker(labels.shape, ignore=None)
    blocks = grid_blocks(labels.shape, 16)
    held = []
    got = 0
    for window in blocks:
        got += len(tracker.add(window, labels[window.slices()]))
        held.append(tracker.pending_regions)
    got += len(tracker.finish())
    assert got == len(gdal_regions(labels, 4, None))
    # never more held than the regions along two rows of blocks
    assert max(held) < got / 4


def test_areas_sum_each_rows_pixel_area() -> None:
    labels = np.zeros((6, 5), np.uint8)
    labels[1:5, 1:4] = 1
    row_area = np.arange(1.0, 7.0)
    tracker = RegionTracker(labels.shape, ignore=None, row_area_m2=row_area)
    out = [r for w in grid_blocks(labels.shape, 2) for r in tracker.add(w, labels[w.slices()])] + tracker.finish()
    by_class = {r.class_index: r for r in out}
    assert by_class[1].area_m2 == pytest.approx(3 * (2 + 3 + 4 + 5))
    assert by_class[0].area_m2 == pytest.approx(row_area.sum() * 5 - 3 * 14)
    assert RegionTracker(labels.shape).add(Window((0, 0), labels.shape), labels)[0].area_m2 is None


def test_valid_mask_and_bad_blocks() -> None:
    labels = np.ones((4, 4), np.uint8)
    valid = np.ones((4, 4), bool)
    valid[:, 2] = False  # a column without prediction cuts the region in two
    tracker = RegionTracker((4, 4))
    assert len(tracker.add(Window((0, 0), (4, 4)), labels, valid)) == 2
    with pytest.raises(ValueError, match="does not lie inside"):
        tracker.add(Window((2, 2), (4, 4)), labels)
    with pytest.raises(ValueError, match="shape"):
        tracker.add(Window((0, 0), (2, 2)), labels)
    with pytest.raises(ValueError, match="connectivity"):
        RegionTracker((4, 4), connectivity=6)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(case=maps(), connectivity=st.sampled_from([4, 8]), ignore=st.sampled_from([None, 0]))
def test_regions_a_worker_found_join_into_the_same_polygons(case: tuple[np.ndarray, list[Window]], connectivity: int,
                                                            ignore: int | None) -> None:
    """Each block's regions found apart (as a worker does, sent back pickled) and only joined by the
    tracker: the same polygons, pixels and areas as the tracker finding them itself, and GDAL's."""
    labels, blocks = case
    row_area = np.linspace(1.0, 2.0, labels.shape[0])
    here = RegionTracker(labels.shape, connectivity=connectivity, ignore=ignore, row_area_m2=row_area)  # type: ignore[arg-type]
    joined = RegionTracker(labels.shape, connectivity=connectivity, ignore=ignore, row_area_m2=row_area)  # type: ignore[arg-type]
    ours, theirs = [], []
    for window in blocks:
        block = labels[window.slices()]
        found = block_regions(block, connectivity=connectivity, ignore=ignore,
                              row_area_m2=row_area[window.start[0]:window.stop[0]])
        theirs.extend(joined.add(window, block, regions=pickle.loads(pickle.dumps(found))))
        ours.extend(here.add(window, block))
    ours.extend(here.finish())
    theirs.extend(joined.finish())
    assert_same(theirs, labels, connectivity, ignore)

    def key(r: Region) -> tuple[int, int, float, str]:
        return r.class_index, r.pixels, round(r.area_m2 or 0.0, 9), normal(r.geometry)

    assert sorted(map(key, theirs)) == sorted(map(key, ours))


def test_regions_of_another_block_size_are_refused() -> None:
    labels = np.zeros((8, 8), np.uint8)
    found = block_regions(labels[:4, :4])
    with pytest.raises(ValueError, match="regions of a 4 x 4 block"):
        RegionTracker(labels.shape).add(Window((0, 0), (8, 8)), labels, regions=found)
