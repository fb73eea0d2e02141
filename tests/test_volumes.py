"""VolumeGrid: geometry from the affine, value semantics and validation."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

from geoseg_pipeline.volumes import VolumeGrid

LAS = np.array([[-0.5, 0, 0, 60.0], [0, 0.5, 0, -40.0], [0, 0, 3.0, 12.0], [0, 0, 0, 1]])
# voxel axes (i, j, k) along world (z, x, -y): axcodes (S, R, P)
PERMUTED = np.array([[0, 2.0, 0, 1.0], [0, 0, -3.0, 2.0], [1.5, 0, 0, 3.0], [0, 0, 0, 1]])


def test_las_grid_properties() -> None:
    grid = VolumeGrid((4, 5, 6), LAS, 1, 1)
    assert grid.shape == (4, 5, 6)
    assert grid.zooms == pytest.approx((0.5, 0.5, 3.0))
    assert grid.voxel_volume_mm3 == pytest.approx(0.75)
    assert grid.voxel_count == 120
    assert grid.axcodes == ("L", "A", "S")
    assert (grid.sform_code, grid.qform_code) == (1, 1)


def test_permuted_axes() -> None:
    grid = VolumeGrid((4, 5, 6), PERMUTED)
    assert grid.axcodes == ("S", "R", "P")
    assert grid.zooms == pytest.approx((1.5, 2.0, 3.0))
    assert grid.voxel_volume_mm3 == pytest.approx(9.0)
    assert (grid.sform_code, grid.qform_code) == (2, 0)  # nibabel's codes for a new image


def test_sheared_voxel_volume_is_the_determinant() -> None:
    affine = np.eye(4)
    affine[0, 1] = 1.0  # columns (1,0,0) and (1,1,0): norms 1 and sqrt(2), area 1
    grid = VolumeGrid((2, 2, 2), affine)
    assert grid.zooms == pytest.approx((1.0, 2**0.5, 1.0))
    assert grid.voxel_volume_mm3 == pytest.approx(1.0)


def test_world_maps_voxel_indices() -> None:
    grid = VolumeGrid((4, 5, 6), LAS)
    np.testing.assert_allclose(grid.world([0, 0, 0]), [60.0, -40.0, 12.0])
    pts = np.array([[1, 2, 3], [3.5, 0, 1]])
    expected = (LAS @ np.c_[pts, np.ones(2)].T).T[:, :3]
    np.testing.assert_allclose(grid.world(pts), expected)
    assert grid.world(pts).shape == (2, 3)
    with pytest.raises(ValueError, match="last axis of 3"):
        grid.world([1, 2])


def test_value_semantics() -> None:
    a = VolumeGrid((4, 5, 6), LAS, 1, 1)
    b = VolumeGrid((4, 5, 6), LAS.tolist(), 1, 1)
    assert a == b and hash(a) == hash(b)
    assert a != VolumeGrid((4, 5, 6), PERMUTED, 1, 1)
    assert a != VolumeGrid((4, 5, 6), LAS, 2, 1)
    assert len({a, b}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.shape = (1, 1, 1)  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        a.affine[0, 0] = 9.0
    source = LAS.copy()
    c = VolumeGrid((4, 5, 6), source)
    source[0, 0] = 9.0  # the grid kept its own copy
    assert c.affine[0, 0] == -0.5


def test_pickle_round_trip_keeps_the_affine_read_only() -> None:
    grid = VolumeGrid((4, 5, 6), PERMUTED, 1, 0)
    back = pickle.loads(pickle.dumps(grid))
    assert back == grid and hash(back) == hash(grid)
    np.testing.assert_array_equal(back.affine, PERMUTED)
    assert not back.affine.flags.writeable


@pytest.mark.parametrize(
    ("shape", "affine", "pattern"),
    [
        ((4, 5), LAS, "three sizes"),
        ((4, 0, 6), LAS, "three sizes"),
        ((4, 5, 6), np.eye(3), "must be 4x4"),
        ((4, 5, 6), np.diag([1.0, 1.0, np.nan, 1.0]), "non-finite"),
        ((4, 5, 6), np.diag([1.0, 0.0, 1.0, 1.0]), "not invertible"),
        ((4, 5, 6), np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "not invertible"),
        ((4, 5, 6), np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]), "last row"),
        ((4, 5, 6), "identity", "4x4"),
    ],
)
def test_invalid_grids(shape: tuple[int, ...], affine: object, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        VolumeGrid(shape, affine)  # type: ignore[arg-type]


def test_singular_message_names_the_affine() -> None:
    with pytest.raises(ValueError, match="affine") as info:
        VolumeGrid((2, 2, 2), np.zeros((4, 4)))
    assert "VolumeGrid affine" in str(info.value)


def test_axis_map_matches_nibabel_apply_orientation() -> None:
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    from geoseg_pipeline.geometry import Window
    from geoseg_pipeline.orientation import axis_map

    rng = np.random.default_rng(0)
    affines = [np.diag([-1.0, -1.0, 1.0, 1.0]), np.array([[0, 0, 2.0, 0], [-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]),
               np.eye(4)]
    for affine in affines:
        disk = rng.random((5, 6, 7))
        amap = axis_map(affine, disk.shape, "RAS")
        ref = apply_orientation(disk, ornt_transform(io_orientation(affine), axcodes2ornt(("R", "A", "S"))))
        assert np.array_equal(amap.to_model_array(disk), ref)
        assert np.array_equal(amap.to_disk_array(ref), disk)
        window = Window((1, 2, 0), (2, 3, 4))
        assert np.array_equal(amap.to_model_array(disk[amap.to_disk_window(window).slices()]), ref[window.slices()])
    assert axis_map(np.eye(4), (2, 3, 4), None).identity
