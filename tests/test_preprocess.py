"""Validity masks and model input: band order, float32 cast, normalization, NaN handling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geoseg_pipeline.errors import GeosegError, InputDataError
from geoseg_pipeline.preprocess import Preprocessing, to_model_input, valid_mask


def test_valid_mask_needs_every_band_to_hold_nodata() -> None:
    data = np.array(
        [
            [[0, 0, 5], [0, 7, 0]],
            [[0, 3, 0], [0, 0, 0]],
        ],
        dtype=np.int16,
    )
    expected = np.array([[False, True, True], [False, True, False]])
    np.testing.assert_array_equal(valid_mask(data, 0.0), expected)
    assert valid_mask(data, 0.0).shape == (2, 3)
    assert valid_mask(data, 0.0).dtype == bool


def test_valid_mask_none_means_all_valid() -> None:
    data = np.zeros((3, 2, 4), dtype=np.uint8)
    mask = valid_mask(data, None)
    assert mask.shape == (2, 4) and mask.dtype == bool and mask.all()


def test_valid_mask_nan_nodata_for_floats() -> None:
    nan = np.nan
    data = np.array([[[nan, nan, 1.0]], [[nan, 2.0, nan]]], dtype=np.float32)
    np.testing.assert_array_equal(valid_mask(data, math.nan), [[False, True, True]])


def test_valid_mask_nan_nodata_for_integers_is_all_valid() -> None:
    data = np.zeros((2, 3, 3), dtype=np.uint16)
    assert valid_mask(data, math.nan).all()


def test_valid_mask_float_nodata_compared_in_stored_precision() -> None:
    # A float32 raster stores nodata -3.4e38 rounded to float32; the float64 value must still match.
    nd = -3.4e38
    data = np.full((1, 1, 2), nd, dtype=np.float32)
    data[0, 0, 1] = 1.0
    np.testing.assert_array_equal(valid_mask(data, nd), [[False, True]])


@pytest.mark.parametrize("nodata", [-1.0, 0.5, 300.0])
def test_valid_mask_nodata_outside_the_dtype_marks_nothing(nodata: float) -> None:
    data = np.array([[[255, 0, 44, 7]]], dtype=np.uint8)
    assert valid_mask(data, nodata).all()


def test_to_model_input_casts_to_float32_without_normalization() -> None:
    data = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4) * 1000
    x = to_model_input(data, valid_mask(data, None), Preprocessing(bands=(1, 2)), "scene")
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, data.astype(np.float32))
    assert x is not data


def test_to_model_input_does_not_modify_the_input() -> None:
    data = np.array([[[np.nan, 1.0]]], dtype=np.float64)
    to_model_input(data, np.array([[False, True]]), Preprocessing(bands=(1,)), "scene")
    assert np.isnan(data[0, 0, 0])


def test_to_model_input_normalizes_exactly() -> None:
    data = np.array([[[10, 2]], [[0, 8]]], dtype=np.int16)
    prep = Preprocessing(bands=(3, 1), mean=(2.0, -4.0), std=(4.0, 0.5))
    x = to_model_input(data, valid_mask(data, None), prep, "scene")
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, np.array([[[2.0, 0.0]], [[8.0, 24.0]]], dtype=np.float32))


def test_to_model_input_normalization_matches_float32_arithmetic() -> None:
    rng = np.random.default_rng(5)
    data = rng.normal(1000, 300, (3, 8, 8)).astype(np.float64)
    mean, std = (1000.5, 12.25, -3.0), (300.0, 0.1, 7.0)
    x = to_model_input(data, valid_mask(data, None), Preprocessing((1, 2, 3), mean, std), "scene")
    expected = (data.astype(np.float32) - np.float32(mean)[:, None, None]) / np.float32(std)[:, None, None]
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_in_a_valid_pixel_raises(bad: float) -> None:
    data = np.ones((2, 3, 4), dtype=np.float32)
    data[1, 2, 3] = bad
    prep = Preprocessing(bands=(4, 2))
    with pytest.raises(InputDataError) as info:
        to_model_input(data, valid_mask(data, None), prep, "scene_07")
    message = str(info.value)
    assert message.startswith("scene_07: 1 valid pixel value(s)")
    assert "band 2" in message  # the second selected band is band 2 of the file
    assert "window row 2, col 3" in message
    assert "inputs.nodata" in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, GeosegError)


def test_nan_counts_every_bad_value() -> None:
    data = np.full((1, 2, 2), np.nan, dtype=np.float64)
    with pytest.raises(InputDataError, match="scene: 4 valid pixel value"):
        to_model_input(data, np.ones((2, 2), bool), Preprocessing(bands=(1,)), "scene")


def test_nan_in_a_nodata_pixel_becomes_zero() -> None:
    nan = np.nan
    data = np.array([[[nan, 1.5], [nan, nan]], [[nan, 2.5], [4.0, nan]]], dtype=np.float32)
    valid = valid_mask(data, math.nan)
    np.testing.assert_array_equal(valid, [[False, True], [True, False]])
    # The pixel at (1, 0) is valid (band 2 holds 4.0) and band 1 is NaN there: that is an error.
    with pytest.raises(InputDataError, match="band 1, window row 1, col 0"):
        to_model_input(data, valid, Preprocessing(bands=(1, 2)), "s")
    data[0, 1, 0] = -1.0
    x = to_model_input(data, valid, Preprocessing(bands=(1, 2)), "s")
    np.testing.assert_array_equal(x, np.array([[[0, 1.5], [-1, 0]], [[0, 2.5], [4, 0]]], dtype=np.float32))


def test_nodata_pixels_stay_finite_after_normalization() -> None:
    data = np.full((2, 3, 3), np.nan, dtype=np.float64)
    data[:, 1, 1] = 5.0
    prep = Preprocessing(bands=(1, 2), mean=(1.0, 2.0), std=(2.0, 3.0))
    x = to_model_input(data, valid_mask(data, math.nan), prep, "s")
    assert np.isfinite(x).all()
    np.testing.assert_array_equal(x[:, 1, 1], np.array([2.0, 1.0], dtype=np.float32))


def test_preprocessing_checks_itself() -> None:
    with pytest.raises(ValueError, match="mean and std go together"):
        Preprocessing(bands=(1,), mean=(1.0,))
    with pytest.raises(ValueError, match="2 normalization entries for 1 bands"):
        Preprocessing(bands=(1,), mean=(1.0, 2.0), std=(1.0, 1.0))
