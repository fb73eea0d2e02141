"""``class_argmax`` is numpy's argmax over the class axis: ties, NaN, volumes, many classes."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg_pipeline.errors import ModelError
from geoseg_pipeline.geometry import Window
from geoseg_pipeline.stitching.blocks import class_argmax


@pytest.mark.parametrize("shape", [(10, 64, 48), (3, 8, 9, 10), (1, 5, 5), (300, 4, 6)])
def test_equals_numpy_argmax(shape: tuple[int, ...]) -> None:
    sums = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
    got = class_argmax(sums)
    assert got.dtype == (np.uint8 if shape[0] <= 256 else np.uint16)
    np.testing.assert_array_equal(got, np.argmax(sums, axis=0))


def test_the_first_of_equal_maxima_wins() -> None:
    sums = np.zeros((4, 3, 3), np.float32)
    sums[1, 0, 0] = sums[3, 0, 0] = 2.0
    sums[2, 1, 1] = sums[3, 1, 1] = -0.0  # -0.0 == 0.0: class 0 stays
    sums[:, 2, 2] = [-1.0, 5.0, 5.0, 5.0]
    got = class_argmax(sums)
    np.testing.assert_array_equal(got, np.argmax(sums, axis=0))
    assert got[0, 0] == 1 and got[1, 1] == 0 and got[2, 2] == 1


def test_nan_where_the_input_was_valid_is_refused_naming_the_block() -> None:
    """numpy (and MONAI's torch.argmax) would call a NaN pixel the first NaN class silently."""
    sums = np.random.default_rng(1).standard_normal((5, 6, 6)).astype(np.float32)
    sums[3, 2, 2] = np.nan
    sums[0, 4, 4] = np.nan
    sums[2, 4, 4] = np.nan
    with pytest.raises(ModelError, match=r"NaN for 2 valid pixel\(s\) of the block at \(512, 0\), size \(6, 6\)"):
        class_argmax(sums, np.ones((6, 6), bool), Window((512, 0), (6, 6)))
    valid = np.ones((6, 6), bool)
    valid[2, 2] = valid[4, 4] = False  # NaN only where there was no valid input: those are nodata
    got = class_argmax(sums, valid)
    np.testing.assert_array_equal(got, np.argmax(sums, axis=0))


def test_infinities() -> None:
    sums = np.full((3, 2, 2), -np.inf, np.float32)
    sums[2, 0, 0] = np.inf
    sums[1, 1, 1] = np.inf
    np.testing.assert_array_equal(class_argmax(sums), np.argmax(sums, axis=0))
