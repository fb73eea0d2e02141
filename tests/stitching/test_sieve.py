"""The minimum mapping unit: blocks kept, then GDAL's sieve of the whole map (nodata masked out),
handed out block by block; units in pixels, m² and ha."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from rasterio import features

from geoseg_pipeline.geometry import Window
from geoseg_pipeline.stitching.sieve import MappingUnitSieve, unit_in_pixels


def speckled(shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.kron(rng.integers(0, 4, (shape[0] // 8 + 1, shape[1] // 8 + 1)), np.ones((8, 8), np.int64))
    labels = labels[: shape[0], : shape[1]]
    speck = rng.random(shape) < 0.04
    labels = np.where(speck, rng.integers(0, 4, shape), labels).astype(np.uint8)
    labels[: shape[0] // 4, : shape[1] // 5] = 255
    return labels


@pytest.mark.parametrize(("connectivity", "threshold", "seed"), [(4, 5, 0), (8, 5, 1), (4, 40, 2), (8, 70, 3)])
def test_blocks_in_any_order_give_gdal_sieve_of_the_whole_map(tmp_path: Path, connectivity: int, threshold: int,
                                                             seed: int) -> None:
    labels = speckled((90, 130), seed)
    windows = [Window((r, c), (min(32, 90 - r), min(32, 130 - c))) for r in range(0, 90, 32) for c in range(0, 130, 32)]
    random.Random(seed).shuffle(windows)
    sieve = MappingUnitSieve(tmp_path / "s", labels.shape, "uint8", 255, threshold, connectivity)
    for window in windows:
        sieve.add(window, labels[window.slices()])
    got = np.full(labels.shape, 7, np.uint8)
    for block in sieve.sieved(windows):
        got[block.window.slices()] = block.labels
        assert block.valid is not None and np.array_equal(block.valid, block.labels != 255)
    want = features.sieve(labels, threshold, mask=labels != 255, connectivity=connectivity)
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(got == 255, labels == 255)  # nodata is never changed nor spread
    assert sieve.changed == int((got != labels).sum()) > 0
    sieve.close()
    assert not (tmp_path / "s").exists()


def test_units() -> None:
    assert unit_in_pixels(25, "px", None, "x") == 25
    assert unit_in_pixels(5000, "m2", 100.0, "x") == 50  # a region of 50 pixels is 5000 m²: kept
    assert unit_in_pixels(0.5, "ha", 100.0, "x") == 50
    assert unit_in_pixels(5001, "m2", 100.0, "x") == 51
    with pytest.raises(ValueError, match=r"scene\.tif: min_mapping_unit in ha needs ground areas"):
        unit_in_pixels(1, "ha", None, "scene.tif")
