"""The tiling plan: MONAI's window grid, tasks, blocks and their contribution counts."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from monai.data.utils import dense_patch_slices
from monai.inferers.utils import _get_scan_interval

from geoseg_pipeline.geometry import Window
from geoseg_pipeline.tiling import TilePlan, plan_tiles

_overlaps = st.floats(0.0, 0.9, allow_nan=False)


@st.composite
def _monai_cases(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...], float, tuple[int, ...]]:
    ndim = draw(st.sampled_from([2, 3]))
    image = tuple(draw(st.integers(1, 600)) for _ in range(ndim))
    roi = tuple(draw(st.integers(1, 300)) for _ in range(ndim))
    block = tuple(draw(st.integers(1, 700)) for _ in range(ndim))
    return image, roi, draw(_overlaps), block


def _monai_starts(image: tuple[int, ...], roi: tuple[int, ...], overlap: float) -> list[tuple[int, ...]]:
    """Window starts of MONAI's sliding_window_inference, in unpadded image coordinates."""
    ndim = len(image)
    padded = tuple(max(n, r) for n, r in zip(image, roi, strict=True))
    before = tuple((r - n) // 2 if n < r else 0 for n, r in zip(image, roi, strict=True))
    interval = _get_scan_interval(padded, roi, ndim, (overlap,) * ndim)
    slices = dense_patch_slices(padded, roi, interval)
    out = []
    for sl in slices:
        assert tuple(s.stop - s.start for s in sl) == roi
        out.append(tuple(int(s.start) - p for s, p in zip(sl, before, strict=True)))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(_monai_cases())
def test_windows_equal_monai_grid(case: tuple[tuple[int, ...], tuple[int, ...], float, tuple[int, ...]]) -> None:
    image, roi, overlap, block = case
    plan = plan_tiles(image, roi, overlap, block)
    assume(plan.window_count <= 4000)
    windows = list(plan.windows())
    assert len(windows) == plan.window_count
    assert all(w.size == roi for w in windows)
    assert [w.start for w in windows] == _monai_starts(image, roi, overlap)


def test_windows_equal_monai_grid_examples() -> None:
    # An image smaller than the roi along one axis (odd difference), larger along the other.
    for image, roi, overlap in [((5, 100), (8, 32), 0.5), ((64, 64), (64, 64), 0.25), ((1, 1), (3, 3), 0.0),
                                ((100, 7, 30), (16, 16, 16), 0.75)]:
        plan = plan_tiles(image, roi, overlap, (32,) * len(image))
        assert [w.start for w in plan.windows()] == _monai_starts(image, roi, overlap)
    plan = plan_tiles((5, 100), (8, 32), 0.5, (32, 32))
    assert plan.starts[0] == (-1,)  # (8 - 5) // 2 = 1 row of padding before
    assert plan.starts[1] == (0, 16, 32, 48, 64, 68)


@st.composite
def _plans(draw: st.DrawFn) -> TilePlan:
    ndim = draw(st.sampled_from([2, 3]))
    limit = 300 if ndim == 2 else 60
    image = tuple(draw(st.integers(1, limit)) for _ in range(ndim))
    roi = tuple(draw(st.integers(1, limit // 2)) for _ in range(ndim))
    block = tuple(draw(st.integers(1, limit)) for _ in range(ndim))
    plan = plan_tiles(image, roi, draw(_overlaps), block)
    assume(plan.window_count <= 1500 and math.prod(plan.block_grid) <= 400)
    return plan


_plan_settings = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])


@_plan_settings
@given(_plans())
def test_every_window_belongs_to_exactly_one_task(plan: TilePlan) -> None:
    tasks = list(plan.tasks())
    assert [t.index for t in tasks] == list(range(len(tasks)))
    assert plan.task_count == len(tasks)
    seen: Counter[Window] = Counter(w for t in tasks for w in t.windows)
    assert set(seen) == set(plan.windows())
    assert set(seen.values()) == {1}
    for t in tasks:
        for w in t.windows:
            clamped = tuple(max(s, 0) // b for s, b in zip(w.start, plan.block_shape, strict=True))
            assert clamped == t.block


@_plan_settings
@given(_plans())
def test_contributions_count_the_tasks_touching_each_block(plan: TilePlan) -> None:
    touched: Counter[tuple[int, ...]] = Counter()
    for t in plan.tasks():
        blocks = plan.blocks_touched(t)
        assert len(set(blocks)) == len(blocks)
        assert t.block in blocks
        touched.update(blocks)
    contributions = plan.contributions()
    assert set(contributions) == set(plan.blocks())
    assert contributions == dict(touched)
    assert min(contributions.values()) >= 1


@_plan_settings
@given(_plans())
def test_every_pixel_is_covered_by_a_window(plan: TilePlan) -> None:
    # Count coverage with an N-dimensional difference array: +/-1 at the window corners.
    ndim = plan.ndim
    diff = np.zeros(tuple(n + 1 for n in plan.image_shape), dtype=np.int64)
    for w in plan.windows():
        lo = [max(s, 0) for s in w.start]
        hi = [min(e, n) for e, n in zip(w.stop, plan.image_shape, strict=True)]
        for corner in range(2**ndim):
            idx = tuple(hi[i] if corner >> i & 1 else lo[i] for i in range(ndim))
            diff[idx] += (-1) ** bin(corner).count("1")
    for axis in range(ndim):
        diff = np.cumsum(diff, axis=axis)
    coverage = diff[tuple(slice(0, n) for n in plan.image_shape)]
    assert coverage.min() >= 1


def test_block_window_and_grid() -> None:
    plan = plan_tiles((100, 70), (32, 32), 0.25, (48, 32))
    assert plan.block_grid == (3, 3)
    assert plan.block_window((0, 0)) == Window((0, 0), (48, 32))
    assert plan.block_window((2, 2)) == Window((96, 64), (4, 6))
    assert list(plan.blocks())[:4] == [(0, 0), (0, 1), (0, 2), (1, 0)]


def test_task_region_reaches_into_padding() -> None:
    plan = plan_tiles((10, 10), (16, 16), 0.5, (16, 16))
    (task,) = plan.tasks()
    assert task.region == Window((-3, -3), (16, 16))
    assert plan.blocks_touched(task) == [(0, 0)]


@pytest.mark.parametrize("overlap", [1.0, 1.5, -0.1, float("nan")])
def test_bad_overlap(overlap: float) -> None:
    with pytest.raises(ValueError, match=rf"overlap must be in \[0, 1\), got {overlap}"):
        plan_tiles((10, 10), (4, 4), overlap, (8, 8))


@pytest.mark.parametrize(
    ("image", "roi", "block", "pattern"),
    [
        ((-5, 10), (4, 4), (8, 8), r"image shape must be positive, got \(-5, 10\)"),
        ((0, 10), (4, 4), (8, 8), r"image shape must be positive, got \(0, 10\)"),
        ((10, 10), (4, -4), (8, 8), r"roi size must be positive, got \(4, -4\)"),
        ((10, 10), (4, 4), (8, -1), r"block shape must be positive, got \(8, -1\)"),
        ((10, 10, 10), (4, 4), (8, 8), r"image \(10, 10, 10\), roi \(4, 4\) and block \(8, 8\)"),
        ((10, 10), (4, 4), (8,), r"block \(8,\) differ in dimensions"),
    ],
)
def test_bad_shapes(image: tuple[int, ...], roi: tuple[int, ...], block: tuple[int, ...], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        plan_tiles(image, roi, 0.25, block)


@_plan_settings
@given(_plans(), st.integers(1, 6))
def test_bands_cut_the_block_rows_and_run_every_window_reaching_into_them(plan: TilePlan, count: int) -> None:
    """Bands partition the block rows; a band runs its own windows once and, as its halo, exactly
    the windows of earlier rows that reach into it (so every band pixel gets every window)."""
    bands = plan.bands(count)
    assert len(bands) == min(count, plan.block_grid[0])
    assert [b.rows for b in bands] == sorted(b.rows for b in bands)
    assert bands[0].rows[0] == 0 and bands[-1].rows[1] == plan.block_grid[0]
    assert all(a.rows[1] == b.rows[0] and b.rows[0] < b.rows[1] for a, b in itertools.pairwise(bands))
    assert sorted(ix for b in bands for ix in plan.band_blocks(b)) == sorted(plan.blocks())
    own_total = 0
    for band in bands:
        top, bottom = (r * plan.block_shape[0] for r in band.rows)
        ran = Counter(w for t in plan.band_tasks(band) for w in t.windows)
        assert set(ran.values()) <= {1}
        reaching = {w for w in plan.windows() if max(w.start[0], 0) < bottom and w.stop[0] > top}
        assert set(ran) == reaching
        own, halo = plan.band_window_count(band)
        assert own + halo == len(ran)
        own_total += own
        # what a band's stitcher counts on: each block of the band gets all its contributions
        added: Counter[tuple[int, ...]] = Counter()
        for task in plan.band_tasks(band):
            for ix in plan.blocks_touched(task):
                added[ix] += 1
        expected = plan.contributions()
        assert all(added[ix] == expected[ix] for ix in plan.band_blocks(band))
    assert own_total == plan.window_count


@settings(max_examples=200, deadline=None)
@given(roi=st.integers(2, 64), extra=st.integers(0, 300))
def test_nnunet_grid_is_nnunets_compute_steps(roi: int, extra: int) -> None:
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    from geoseg_pipeline.tiling import nnunet_axis_starts

    n = roi + extra
    assert nnunet_axis_starts(n, roi, 0.5) == compute_steps_for_sliding_window((n,), (roi,), 0.5)[0]


def test_an_nnunet_plan_pads_a_small_image_and_visits_every_slice_of_a_2d_model() -> None:
    plan = plan_tiles((5, 40, 20), (1, 32, 32), 0.5, (4, 32, 32), grid="nnunet")
    assert plan.starts[0] == (0, 1, 2, 3, 4)
    assert plan.starts[1] == (0, 8)  # nnU-Net: ceil((40 - 32) / 16) + 1 = 2 steps, 0 and 8
    assert plan.starts[2] == (-6,)  # 20 padded to 32: 6 before, as nnU-Net's pad_nd_image
