"""Block stitching with an exact predictor: no Ray, no model, checkable to the last bit.

The "model" predicts ``logits[k] = k * f(pixel)`` where ``f`` depends only on the pixel's global
coordinates, so every window agrees with every other one and the blend must give ``f`` back.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from geoseg_pipeline.geometry import Window, full_window, intersection
from geoseg_pipeline.stitching import BlockStitcher, FinishedBlock
from geoseg_pipeline.stitching.weights import importance_map
from geoseg_pipeline.tasks import TileResult
from geoseg_pipeline.tiling import TilePlan, TileTask, plan_tiles

NODATA = 255


def exact_value(window: Window, offset: float = 0.0) -> np.ndarray:
    """``f`` on ``window``: row * 1000 + col in 2D (generally a base-1000 number of the coordinates)."""
    axes = np.meshgrid(*(np.arange(s, s + n) for s, n in zip(window.start, window.size, strict=True)),
                       indexing="ij")
    f = sum(a.astype(np.float64) * 1000 ** (len(axes) - 1 - i) for i, a in enumerate(axes))
    return np.asarray(f, dtype=np.float64) - offset


def exact_logits(window: Window, classes: int, offset: float = 0.0) -> np.ndarray:
    f = exact_value(window, offset)
    return np.stack([k * f for k in range(classes)])


def tile_result(plan: TilePlan, task: TileTask, valid_image: np.ndarray, weights: np.ndarray,
                classes: int, offset: float) -> TileResult:
    """What an inference actor returns for ``task``, computed the way TileExecutor does."""
    region = task.region
    inside = intersection(region, full_window(plan.image_shape))
    assert inside is not None
    valid = np.zeros(region.size, dtype=bool)
    sl = inside.slices(region.start)
    valid[sl] = valid_image[inside.slices()]
    runnable = [w for w in task.windows if valid[w.slices(region.start)].any()]
    logits = np.zeros((classes, *region.size), dtype=np.float32)
    wsum = np.zeros(region.size, dtype=np.float32)
    for w in runnable:
        s = w.slices(region.start)
        logits[(slice(None), *s)] += exact_logits(w, classes, offset).astype(np.float32) * weights
        wsum[s] += weights
    crop = (slice(None), *sl)
    return TileResult(
        task_index=task.index,
        region=inside,
        logits=logits[crop] if runnable else np.zeros((0, *inside.size), np.float32),
        weights=wsum[sl],
        valid=valid[sl],
        windows_run=len(runnable),
        windows_skipped=len(task.windows) - len(runnable),
    )


def stitch(plan: TilePlan, valid_image: np.ndarray, blend: str, classes: int, offset: float, seed: int,
           keep_logits: bool = True, scratch: Path | None = None) -> tuple[list[FinishedBlock], list[TileResult]]:
    weights = importance_map(plan.roi_size, blend).numpy()
    tasks = list(plan.tasks())
    results = [tile_result(plan, t, valid_image, weights, classes, offset) for t in tasks]
    random.Random(seed).shuffle(results)
    stitcher = BlockStitcher(plan, classes, NODATA, np.dtype(np.uint8), keep_logits=keep_logits, scratch=scratch)
    touching = {t.index: set(plan.blocks_touched(t)) for t in tasks}
    added: set[int] = set()
    finished: list[FinishedBlock] = []
    for n, result in enumerate(results):
        assert not stitcher.done
        out = stitcher.add(result)
        added.add(result.task_index)
        for block in out:
            # A block is handed over only once every task touching it has been added ...
            assert {i for i, blocks in touching.items() if block.index in blocks} <= added
        finished += out
        # ... and as soon as that is the case.
        expected_open = {b for i in added for b in touching[i]} - {b.index for b in finished}
        assert stitcher.open_blocks == len(expected_open), n
        if scratch is not None:  # one file per open block
            assert len(list(scratch.iterdir())) == len(expected_open)
    assert stitcher.done
    assert stitcher.open_blocks == 0
    return finished, results


def assemble(plan: TilePlan, finished: list[FinishedBlock], classes: int) -> tuple[np.ndarray, ...]:
    indices = [b.index for b in finished]
    assert sorted(indices) == sorted(plan.blocks())
    assert len(set(indices)) == len(indices)
    labels = np.full(plan.image_shape, 77, dtype=np.uint8)
    valid = np.zeros(plan.image_shape, dtype=bool)
    logits = np.full((classes, *plan.image_shape), -1.0, dtype=np.float32)
    for b in finished:
        assert b.window == plan.block_window(b.index)
        assert b.labels.shape == b.window.size and b.labels.dtype == np.uint8
        assert b.valid.shape == b.window.size
        labels[b.window.slices()] = b.labels
        valid[b.window.slices()] = b.valid
        if b.logits is not None:
            assert b.logits.shape == (classes, *b.window.size)
            logits[(slice(None), *b.window.slices())] = b.logits
    return labels, valid, logits


def check_exact(plan: TilePlan, finished: list[FinishedBlock], valid_image: np.ndarray, classes: int,
                offset: float) -> None:
    labels, valid, logits = assemble(plan, finished, classes)
    expected = exact_logits(full_window(plan.image_shape), classes, offset)
    np.testing.assert_array_equal(valid, valid_image)
    np.testing.assert_allclose(logits[:, valid], expected[:, valid], rtol=1e-5, atol=0)
    assert np.isnan(logits[:, ~valid]).all()
    np.testing.assert_array_equal(labels[valid], np.argmax(expected, axis=0)[valid])
    assert (labels[~valid] == NODATA).all()


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_predictor_with_nodata(blend: str, seed: int) -> None:
    shape, classes = (100, 130), 3
    plan = plan_tiles(shape, (16, 24), 0.25, (32, 48))
    rows, cols = np.indices(shape)
    valid_image = ~(
        ((rows < 40) & (cols < 60))  # every window of the task of block (0, 0)
        | ((rows >= 64) & (cols < 30))  # some windows of the task of block (2, 0)
        | ((rows * 7 + cols * 3) % 11 == 0)  # scattered nodata pixels
    )
    offset = 50_000.5  # f changes sign inside the image: argmax is 0 above, 2 below
    finished, results = stitch(plan, valid_image, blend, classes, offset, seed)
    assert any(r.logits.shape[0] == 0 for r in results)  # some task lay entirely in nodata
    assert any(r.windows_skipped and r.windows_run for r in results)
    check_exact(plan, finished, valid_image, classes, offset)
    labels, _, _ = assemble(plan, finished, classes)
    assert set(np.unique(labels)) == {0, 2, NODATA}


@pytest.mark.parametrize("seed", [0, 1])
def test_scratch_file_blocks_equal_memory_blocks(tmp_path: Path, seed: int) -> None:
    """Open blocks kept in scratch files (volumes) blend exactly as in memory, in 3D, and leave
    no file behind."""
    shape, classes = (30, 26, 20), 3
    plan = plan_tiles(shape, (8, 8, 6), 0.5, (16, 16, 16))
    valid_image = np.ones(shape, dtype=bool)
    valid_image[:9, :9, :7] = False
    offset = 15_000_000.5
    in_memory, _ = stitch(plan, valid_image, "gaussian", classes, offset, seed)
    on_disk, _ = stitch(plan, valid_image, "gaussian", classes, offset, seed, scratch=tmp_path)
    assert list(tmp_path.iterdir()) == []
    check_exact(plan, on_disk, valid_image, classes, offset)
    for a, b in zip(assemble(plan, in_memory, classes), assemble(plan, on_disk, classes), strict=True):
        np.testing.assert_array_equal(a, b)


def test_discard_removes_scratch_files(tmp_path: Path) -> None:
    plan = plan_tiles((40, 40, 40), (8, 8, 8), 0.25, (16, 16, 16))
    weights = importance_map((8, 8, 8), "gaussian").numpy()
    stitcher = BlockStitcher(plan, 2, None, np.dtype(np.uint8), scratch=tmp_path)
    stitcher.add(tile_result(plan, next(plan.tasks()), np.ones((40, 40, 40), bool), weights, 2, 0.0))
    assert stitcher.open_blocks and list(tmp_path.iterdir())
    stitcher.discard()
    assert stitcher.open_blocks == 0 and list(tmp_path.iterdir()) == []


def test_image_smaller_than_the_roi() -> None:
    plan = plan_tiles((10, 7), (16, 16), 0.5, (16, 16))
    valid_image = np.ones((10, 7), dtype=bool)
    valid_image[0, 0] = False
    finished, _ = stitch(plan, valid_image, "gaussian", 4, 3000.0, 0)
    check_exact(plan, finished, valid_image, 4, 3000.0)


def test_everything_nodata_gives_nodata_labels() -> None:
    plan = plan_tiles((40, 40), (16, 16), 0.25, (16, 16))
    valid_image = np.zeros((40, 40), dtype=bool)
    finished, _ = stitch(plan, valid_image, "gaussian", 2, 0.0, 0)
    labels, valid, logits = assemble(plan, finished, 2)
    assert (labels == NODATA).all() and not valid.any() and np.isnan(logits).all()


def test_logits_are_dropped_unless_kept() -> None:
    plan = plan_tiles((40, 50), (16, 16), 0.25, (16, 32))
    valid_image = np.ones((40, 50), dtype=bool)
    finished, _ = stitch(plan, valid_image, "constant", 3, 0.0, 4, keep_logits=False)
    assert all(b.logits is None for b in finished)
    labels, _, _ = assemble(plan, finished, 3)
    assert (labels[0, 0] == 0) and (labels[1:, :] == 2).all()


def test_uint16_labels() -> None:
    plan = plan_tiles((20, 20), (8, 8), 0.0, (16, 16))
    weights = importance_map((8, 8), "constant").numpy()
    stitcher = BlockStitcher(plan, 300, 65535, np.dtype(np.uint16))
    valid_image = np.ones((20, 20), dtype=bool)
    valid_image[19, 19] = False
    finished = []
    for task in plan.tasks():
        finished += stitcher.add(tile_result(plan, task, valid_image, weights, 300, 0.0))
    assert stitcher.done
    labels = np.zeros((20, 20), dtype=np.uint16)
    for b in finished:
        assert b.labels.dtype == np.uint16
        labels[b.window.slices()] = b.labels
    assert labels[19, 19] == 65535
    assert labels[0, 0] == 0 and labels[5, 5] == 299


@st.composite
def _cases(draw: st.DrawFn) -> tuple[TilePlan, str, int]:
    ndim = draw(st.sampled_from([2, 2, 3]))
    limit = 60 if ndim == 2 else 14
    image = tuple(draw(st.integers(1, limit)) for _ in range(ndim))
    roi = tuple(draw(st.integers(1, limit // 2)) for _ in range(ndim))
    block = tuple(draw(st.integers(1, limit)) for _ in range(ndim))
    plan = plan_tiles(image, roi, draw(st.floats(0.0, 0.9)), block)
    assume(plan.window_count <= 400 and math.prod(plan.block_grid) <= 200)
    return plan, draw(st.sampled_from(["gaussian", "constant"])), draw(st.integers(0, 2**16))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(_cases())
def test_every_pixel_is_written_exactly_once(case: tuple[TilePlan, str, int]) -> None:
    plan, blend, seed = case
    valid_image = np.ones(plan.image_shape, dtype=bool)
    offset = float(np.median(exact_value(full_window(plan.image_shape)))) + 0.5
    finished, _ = stitch(plan, valid_image, blend, 2, offset, seed)
    written = np.zeros(plan.image_shape, dtype=np.int64)
    for b in finished:
        written[b.window.slices()] += 1
    assert (written == 1).all()
    check_exact(plan, finished, valid_image, 2, offset)
