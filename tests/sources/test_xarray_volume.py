"""Live volume DataArrays (``(channel, z, y, x)`` / ``(z, y, x)``) as volume items: the source
contract (numpy- and dask-backed), the voxel geometry from coordinates (as nibabel would put it
in a NIfTI header) and the errors for arrays without one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import dask.array
import nibabel as nib
import numpy as np
import pytest
import source_contract as contract
import xarray as xr
from source_contract import VolumeItem, positional

from geoseg_pipeline.errors import InputDataError, SourceError
from geoseg_pipeline.geometry import Window
from geoseg_pipeline.sources.xarray_source import live_dataarray
from geoseg_pipeline.sources.xarray_volume import DataArrayVolumeSource, is_volume, volume_affine

SHAPE = (11, 13, 9)  # z, y, x
SPACING = (2.5, -0.8, 0.7)  # y runs backwards
ORIGIN = (-40.0, 20.0, 30.0)


def _coords(shape: tuple[int, int, int] = SHAPE) -> dict[str, np.ndarray]:
    return {d: ORIGIN[a] + SPACING[a] * np.arange(shape[a]) for a, d in enumerate("zyx")}


def _expected_affine() -> np.ndarray:
    """Voxel (i, j, k) = (z, y, x) index -> world (x, y, z) mm."""
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    for axis, world in ((0, 2), (1, 1), (2, 0)):
        affine[world, axis] = SPACING[axis]
        affine[world, 3] = ORIGIN[axis]
    return affine


class _LiveVolume(contract.VolumeSourceContract):
    format_name = "xarray"
    detected = False  # only predict_dataarray names a live array
    reader = DataArrayVolumeSource
    chunks: ClassVar[tuple[int, ...] | None] = None

    @pytest.fixture(scope="class")
    @classmethod
    def item(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VolumeItem]:
        data = positional((3, *SHAPE), np.int16)
        backing: Any = data if cls.chunks is None else dask.array.from_array(data, chunks=cls.chunks)
        da = xr.DataArray(backing, dims=("channel", "z", "y", "x"), coords=_coords())
        with live_dataarray(da, tmp_path_factory.mktemp("live-volume"), "vol", spatial=3) as handle:
            yield VolumeItem(handle, data.astype(np.float32), _expected_affine())


class TestDataArrayVolumeNumpy(_LiveVolume):
    pass


class TestDataArrayVolumeDask(_LiveVolume):
    chunks = (3, 4, 5, 4)  # chunks smaller than the contract's windows: reads cross chunk edges

    def test_reads_go_through_the_chunk_cache(self, source: DataArrayVolumeSource) -> None:
        assert source._cache is not None and source._cache.spatial == 3


def test_a_single_channel_volume_and_its_axcodes(tmp_path: Path) -> None:
    data = positional(SHAPE, np.float32)
    da = xr.DataArray(data, dims=("z", "y", "x"), coords=_coords())
    assert is_volume(da.dims) and is_volume(("c", "z", "y", "x")) and is_volume(("slice", "row", "col"))
    assert not is_volume(("band", "y", "x")) and not is_volume(("time", "band", "y", "x"))
    with live_dataarray(da, tmp_path, "one", spatial=3) as handle:
        src = DataArrayVolumeSource(str(handle), da)
        assert src.channel_count == 1
        np.testing.assert_array_equal(src.read(Window((1, 2, 3), (4, 5, 6)), [0, 0]),
                                      np.stack([data[1:5, 2:7, 3:9]] * 2))
    # what nibabel says of the same affine: a (z, y, x) array is S, P (y backwards), R
    assert nib.aff2axcodes(volume_affine("vol", da)) == ("S", "P", "R")
    assert src.grid.zooms == pytest.approx((2.5, 0.8, 0.7))


def test_units_and_an_affine_attribute() -> None:
    coords = _coords()
    da = xr.DataArray(np.zeros(SHAPE, np.float32), dims=("z", "y", "x"), coords=coords)
    in_cm = da.assign_coords(x=xr.DataArray(coords["x"] / 10, dims="x", attrs={"units": "cm"}))
    np.testing.assert_allclose(volume_affine("v", in_cm), volume_affine("v", da), rtol=0, atol=1e-9)
    given = np.diag([1.5, 1.5, 3.0, 1.0])
    assert (volume_affine("v", da.assign_attrs(affine=given.tolist())) == given).all()
    # names that are not x/y/z map in order: i -> x, j -> y, k -> z
    plain = xr.DataArray(np.zeros((3, 4, 5)), dims=("slice", "row", "col"),
                         coords={"slice": [0, 3, 6], "row": [0, 1, 2, 3], "col": np.arange(5) * 0.5})
    np.testing.assert_array_equal(np.diag(volume_affine("v", plain)), [3.0, 1.0, 0.5, 1.0])


@pytest.mark.parametrize(("change", "message"), [
    ("no-coordinate", "dimension 'y' has no coordinate, so the voxel size is unknown"),
    ("irregular", "coordinate 'x' is not regularly spaced"),
    ("units", "coordinate 'z' has units 'furlong'"),
    ("affine", "attribute 'affine' is not a usable voxel-to-world matrix: VolumeGrid affine must be 4x4"),
    ("one-voxel", "dimension 'z' has one voxel"),
    ("text", "unsupported voxel type"),
])
def test_arrays_without_a_voxel_geometry_are_refused_by_name(change: str, message: str) -> None:
    coords = _coords()
    data: np.ndarray = np.zeros(SHAPE, np.float32)
    if change == "no-coordinate":
        coords.pop("y")
    elif change == "irregular":
        coords["x"] = coords["x"] ** 2
    elif change == "one-voxel":
        data = np.zeros((1, *SHAPE[1:]), np.float32)
        coords["z"] = coords["z"][:1]
    elif change == "text":
        data = np.zeros(SHAPE, "U1")
    da = xr.DataArray(data, dims=("z", "y", "x"), coords=coords)
    if change == "units":
        da.coords["z"].attrs["units"] = "furlong"
    if change == "affine":
        da.attrs["affine"] = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    with pytest.raises(SourceError if change == "text" else InputDataError) as err:
        DataArrayVolumeSource("DataArray 'vol'", da)
    assert "DataArray 'vol'" in str(err.value) and message in str(err.value)
