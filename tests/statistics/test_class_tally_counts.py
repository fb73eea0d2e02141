"""A worker's per-row class counts give the class tally exactly what counting the labels in the
driver gives (a block whose counts came with it, or a resumed one counted by the driver)."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg_pipeline.geometry import Window
from geoseg_pipeline.statistics.area import PixelAreas
from geoseg_pipeline.statistics.classes import ClassTally, row_class_counts
from geoseg_pipeline.stitching import LabelBlock


def _naive(labels: np.ndarray, valid: np.ndarray, classes: int) -> np.ndarray:
    return np.stack([np.bincount(row[v], minlength=classes) for row, v in zip(labels, valid, strict=True)])


@pytest.mark.parametrize("classes", [1, 3, 10, 300])
def test_row_class_counts_equal_a_bincount_per_row(classes: int) -> None:
    rng = np.random.default_rng(classes)
    labels = rng.integers(0, classes, (37, 53)).astype(np.uint16 if classes > 255 else np.uint8)
    valid = rng.random((37, 53)) > 0.3
    np.testing.assert_array_equal(row_class_counts(labels, valid, classes), _naive(labels, valid, classes))
    everything = np.ones(labels.shape, bool)
    np.testing.assert_array_equal(row_class_counts(labels, everything, classes), _naive(labels, everything, classes))


def test_blocks_with_counts_and_blocks_without_give_the_same_statistics() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (64, 48)).astype(np.uint8)
    valid = rng.random(labels.shape) > 0.2
    labels[~valid] = 255
    areas = PixelAreas("geodesic", np.linspace(90.0, 110.0, 64))
    counted, sent = ClassTally(4, areas, item="a"), ClassTally(4, areas, item="b")
    for r in range(0, 64, 16):
        for c in range(0, 48, 24):
            window = Window((r, c), (16, 24))
            part, ok = labels[r : r + 16, c : c + 24], valid[r : r + 16, c : c + 24]
            counted.add(LabelBlock(window, part, ok))
            sent.add(LabelBlock(window, part, ok, row_counts=row_class_counts(part, ok, 4).astype(np.uint16)))
    a, b = counted.finish(), sent.finish()
    assert a.classes == b.classes and a.valid_pixels == b.valid_pixels == int(valid.sum())
    assert a.nodata_pixels == b.nodata_pixels == int((~valid).sum())
    assert a.valid_area_m2 == b.valid_area_m2 is not None


def test_counts_of_the_wrong_shape_are_refused() -> None:
    tally = ClassTally(4, PixelAreas("none"), item="x")
    with pytest.raises(ValueError, match="counts of shape"):
        tally.add(LabelBlock(Window((0, 0), (8, 8)), np.zeros((8, 8), np.uint8),
                             row_counts=np.zeros((8, 3), np.uint16)))
