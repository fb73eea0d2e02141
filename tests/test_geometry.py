"""Window, intersection, union, full_window and Grid: behaviour and errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from affine import Affine
from hypothesis import given
from hypothesis import strategies as st

from geoseg_pipeline.geometry import Grid, Window, full_window, intersection, union


def test_window_properties() -> None:
    w = Window((-2, 3), (5, 4))
    assert w.ndim == 2
    assert w.stop == (3, 7)
    assert w.count == 20


def test_window_3d_and_empty() -> None:
    w = Window((1, 2, 3), (4, 0, 6))
    assert w.ndim == 3
    assert w.stop == (5, 2, 9)
    assert w.count == 0


def test_window_dimension_mismatch_names_both() -> None:
    with pytest.raises(ValueError, match=r"\(1, 2\).*\(3,\)"):
        Window((1, 2), (3,))


def test_window_negative_size_names_value() -> None:
    with pytest.raises(ValueError, match=r"got \(2, -1\)"):
        Window((0, 0), (2, -1))


def test_window_is_frozen_hashable_and_ordered() -> None:
    w = Window((0, 0), (2, 2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.start = (1, 1)  # type: ignore[misc]
    assert len({w, Window((0, 0), (2, 2)), Window((0, 1), (2, 2))}) == 2
    assert sorted([Window((1, 0), (1, 1)), Window((0, 5), (1, 1)), Window((0, 2), (3, 1))]) == [
        Window((0, 2), (3, 1)),
        Window((0, 5), (1, 1)),
        Window((1, 0), (1, 1)),
    ]


def test_slices_default_origin_select_the_window() -> None:
    a = np.arange(100).reshape(10, 10)
    w = Window((2, 3), (4, 5))
    assert w.slices() == (slice(2, 6), slice(3, 8))
    np.testing.assert_array_equal(a[w.slices()], a[2:6, 3:8])


def test_slices_with_origin_are_relative() -> None:
    # An array whose element 0 lies at (10, 20) on the grid.
    w = Window((12, 25), (3, 2))
    assert w.slices((10, 20)) == (slice(2, 5), slice(5, 7))
    # Negative starts relative to a negative origin (padding).
    assert Window((-3, 0), (2, 2)).slices((-4, -1)) == (slice(1, 3), slice(1, 3))


def test_slices_origin_dimension_mismatch() -> None:
    with pytest.raises(ValueError):
        Window((0, 0), (1, 1)).slices((0,))


def test_intersection_overlap() -> None:
    a = Window((0, 0), (10, 10))
    b = Window((5, -3), (10, 6))
    assert intersection(a, b) == Window((5, 0), (5, 3))
    assert intersection(b, a) == Window((5, 0), (5, 3))


def test_intersection_contained() -> None:
    outer = Window((0, 0, 0), (10, 10, 10))
    inner = Window((2, 3, 4), (1, 2, 3))
    assert intersection(outer, inner) == inner


@pytest.mark.parametrize(
    "b",
    [
        Window((10, 0), (5, 5)),  # touches along the row edge
        Window((0, 10), (5, 5)),  # touches along the column edge
        Window((20, 20), (1, 1)),  # far away
        Window((-5, 0), (5, 10)),  # touches from before
    ],
)
def test_intersection_none_when_not_overlapping(b: Window) -> None:
    assert intersection(Window((0, 0), (10, 10)), b) is None


def test_intersection_with_empty_window_is_none() -> None:
    assert intersection(Window((0, 0), (10, 10)), Window((3, 3), (0, 4))) is None


def test_intersection_dimension_mismatch() -> None:
    with pytest.raises(ValueError):
        intersection(Window((0, 0), (1, 1)), Window((0,), (1,)))


def test_union() -> None:
    ws = [Window((0, 5), (2, 2)), Window((-1, 0), (1, 1)), Window((3, 3), (4, 1))]
    assert union(ws) == Window((-1, 0), (8, 7))
    assert union(ws[:1]) == ws[0]


def test_union_of_nothing_raises() -> None:
    with pytest.raises(ValueError, match="no windows"):
        union([])


def test_full_window() -> None:
    assert full_window((3, 4)) == Window((0, 0), (3, 4))
    assert full_window(np.array([2, 3, 5])) == Window((0, 0, 0), (2, 3, 5))
    assert all(type(n) is int for n in full_window(np.array([2, 3])).size)


def test_grid_properties_and_defaults() -> None:
    g = Grid((3, 7))
    assert (g.height, g.width, g.pixel_count) == (3, 7, 21)
    assert g.transform == Affine.identity()
    assert g.crs is None
    t = Affine(10, 0, 500000, 0, -10, 4000000)
    assert Grid((3, 7), t, "EPSG:32633") == Grid((3, 7), t, "EPSG:32633")
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.crs = "EPSG:4326"  # type: ignore[misc]


_coord = st.integers(-6, 6)
_size = st.integers(0, 6)
_windows = st.builds(
    lambda r, c, h, w: Window((r, c), (h, w)), _coord, _coord, _size, _size
)


def _mask(w: Window) -> np.ndarray:
    """The pixels of ``w`` on a canvas covering [-6, 12) along both axes."""
    m = np.zeros((18, 18), dtype=bool)
    m[w.slices((-6, -6))] = True
    return m


@given(_windows, _windows)
def test_intersection_matches_pixel_sets(a: Window, b: Window) -> None:
    both = _mask(a) & _mask(b)
    got = intersection(a, b)
    if got is None:
        assert not both.any()
    else:
        np.testing.assert_array_equal(_mask(got), both)
        assert got.count == int(both.sum())
    assert intersection(b, a) == got


@given(st.lists(_windows, min_size=1, max_size=5))
def test_union_is_the_smallest_box(ws: list[Window]) -> None:
    u = union(ws)
    for w in ws:
        assert all(us <= s for us, s in zip(u.start, w.start, strict=True))
        assert all(ue >= e for ue, e in zip(u.stop, w.stop, strict=True))
    for i in range(2):
        assert u.start[i] == min(w.start[i] for w in ws)
        assert u.stop[i] == max(w.stop[i] for w in ws)
