"""Synthetic land-cover scenes: georeferencing, nodata corner, block independence, seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from geoseg_pipeline.demo.scenes import (
    LABEL_NODATA,
    LANDCOVER_BANDS,
    LANDCOVER_CLASS_COLOURS,
    LANDCOVER_CLASS_NAMES,
    write_landcover_scene,
)

SceneArrays = tuple[npt.NDArray[np.uint16], npt.NDArray[np.uint8]]


def _write_and_read(
    tmp_path: Path, name: str, height: int, width: int, seed: int, *, block: int = 512, nodata_corner: bool = True
) -> SceneArrays:
    """Write a scene and its labels under ``tmp_path`` and read both back."""
    scene, labels = tmp_path / f"{name}.tif", tmp_path / f"{name}-labels.tif"
    write_landcover_scene(scene, height, width, seed, labels_path=labels, block=block, nodata_corner=nodata_corner)
    with rasterio.open(scene) as src, rasterio.open(labels) as ref:
        return src.read(), ref.read(1)


def test_class_metadata_is_consistent() -> None:
    assert len(LANDCOVER_CLASS_COLOURS) == len(LANDCOVER_CLASS_NAMES) == 4
    assert all(len(c) == 7 and c.startswith("#") and int(c[1:], 16) >= 0 for c in LANDCOVER_CLASS_COLOURS)
    assert LANDCOVER_BANDS == ("blue", "green", "red", "nir")


def test_scene_has_expected_grid_dtype_and_nodata(tmp_path: Path) -> None:
    scene, labels = tmp_path / "scene.tif", tmp_path / "labels.tif"
    write_landcover_scene(
        scene, 300, 200, 5, labels_path=labels, crs="EPSG:32632", pixel_size=20.0, origin=(400000.0, 6000000.0)
    )
    with rasterio.open(scene) as src, rasterio.open(labels) as ref:
        assert (src.count, src.height, src.width) == (4, 300, 200)
        assert src.dtypes == ("uint16",) * 4
        assert src.nodata == 0
        assert src.crs == CRS.from_epsg(32632)
        assert src.transform == from_origin(400000.0, 6000000.0, 20.0, 20.0)
        assert src.profile["tiled"] and src.block_shapes[0] == (512, 512)
        assert src.compression is not None and src.compression.name.lower() == "deflate"
        assert src.descriptions == LANDCOVER_BANDS
        assert (ref.count, ref.dtypes[0], ref.nodata) == (1, "uint8", LABEL_NODATA)
        assert (ref.crs, ref.transform, ref.shape) == (src.crs, src.transform, src.shape)


def test_nodata_corner_matches_labels(tmp_path: Path) -> None:
    bands, labels = _write_and_read(tmp_path, "scene", 256, 320, 3)
    nodata = (bands == 0).all(axis=0)
    assert 0.05 <= nodata.mean() <= 0.10
    assert nodata[0, -1] and not nodata[-1, 0]  # the top-right corner
    np.testing.assert_array_equal(labels == LABEL_NODATA, nodata)
    assert not (bands[:, ~nodata] == 0).any()  # valid pixels are never zero in any band
    assert set(np.unique(labels[~nodata])) <= {0, 1, 2, 3}


def test_without_nodata_corner_every_pixel_is_valid(tmp_path: Path) -> None:
    bands, labels = _write_and_read(tmp_path, "scene", 128, 128, 3, nodata_corner=False)
    assert (bands > 0).all()
    assert (labels != LABEL_NODATA).all()


def test_pixels_do_not_depend_on_block_size(tmp_path: Path) -> None:
    small = _write_and_read(tmp_path, "small-blocks", 700, 600, 11, block=256)
    large = _write_and_read(tmp_path, "large-blocks", 700, 600, 11, block=512)
    np.testing.assert_array_equal(small[0], large[0])
    np.testing.assert_array_equal(small[1], large[1])


def test_scene_is_a_crop_of_a_larger_scene_away_from_nodata(tmp_path: Path) -> None:
    small = _write_and_read(tmp_path, "small", 200, 160, 2, nodata_corner=False)
    large = _write_and_read(tmp_path, "large", 400, 400, 2, nodata_corner=False, block=128)
    np.testing.assert_array_equal(small[0], large[0][:, :200, :160])
    np.testing.assert_array_equal(small[1], large[1][:200, :160])


def test_scene_has_realistic_class_mix_and_spectra(tmp_path: Path) -> None:
    bands, labels = _write_and_read(tmp_path, "scene", 512, 512, 1000)
    valid = labels != LABEL_NODATA
    fractions = np.bincount(labels[valid], minlength=4) / valid.sum()
    assert (fractions > 0.02).all(), fractions
    reflectance = bands.astype(np.float64) / 10000
    mean = {k: reflectance[:, labels == k].mean(axis=1) for k in range(4)}
    water, vegetation, soil, built = mean[0], mean[1], mean[2], mean[3]
    assert water[3] < 0.08 and vegetation[3] > 0.25  # NIR: water dark, vegetation bright
    assert vegetation[3] / vegetation[2] > 4  # red edge
    assert soil[2] / soil[0] > 1.4 and built[2] / built[0] < 1.25  # soil reddish, built-up flat


def test_same_seed_repeats_and_different_seeds_differ(tmp_path: Path) -> None:
    first = _write_and_read(tmp_path, "a", 128, 128, 1)
    again = _write_and_read(tmp_path, "b", 128, 128, 1)
    other = _write_and_read(tmp_path, "c", 128, 128, 2)
    np.testing.assert_array_equal(first[0], again[0])
    valid = first[1] != LABEL_NODATA
    assert (first[0][:, valid] != other[0][:, valid]).mean() > 0.5


@pytest.mark.parametrize(
    ("height", "width", "seed", "block", "message"),
    [(0, 10, 0, 512, "shape"), (10, 10, -1, 512, "seed"), (10, 10, 0, 100, "block")],
)
def test_invalid_arguments_name_the_value_and_file(
    tmp_path: Path, height: int, width: int, seed: int, block: int, message: str
) -> None:
    path = tmp_path / "bad.tif"
    with pytest.raises(ValueError, match=message) as error:
        write_landcover_scene(path, height, width, seed, block=block)
    assert str(path) in str(error.value)
    assert not path.exists()
