"""Resampling to a model's spacing: MONAI's ``Spacing`` grid and values, window by window."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor
from monai.transforms import Spacing

from geoseg_pipeline.geometry import Window
from geoseg_pipeline.resampling import ResampledVolume, SpacingMap, spacing_map


class _ArraySource:
    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.reads: list[Window] = []

    def read(self, window: Window, channels: Sequence[int] | None = None) -> np.ndarray:
        self.reads.append(window)
        return self.data[(slice(None), *window.slices())]

    def close(self) -> None:
        pass


def _monai_spacing(data: np.ndarray, zooms: Sequence[float], target: Sequence[float]) -> np.ndarray:
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = (12.0, -7.0, 3.0)
    image = MetaTensor(torch.from_numpy(data), affine=torch.from_numpy(affine))
    out = Spacing(pixdim=tuple(target), mode="bilinear")(image)
    return np.asarray(out.numpy())


@settings(max_examples=25, deadline=None)
@example(shape=(2, 2, 16), zooms=(0.7, 0.7, 1.25), target=(0.5, 0.5, 1.5))  # 15 * (1.25 / 1.5) + 1 is just under 13.5
@given(
    shape=st.tuples(*(st.integers(2, 24),) * 3),
    zooms=st.tuples(*(st.sampled_from([0.7, 0.8, 1.0, 1.25, 2.5, 3.0]),) * 3),
    target=st.tuples(*(st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.3]),) * 3),
)
def test_grid_and_values_equal_monai_spacing(
    shape: tuple[int, int, int], zooms: tuple[float, float, float], target: tuple[float, float, float]
) -> None:
    data = np.random.default_rng(sum(shape)).normal(0, 1, (1, *shape)).astype(np.float32)
    ref = _monai_spacing(data, zooms, target)
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = (12.0, -7.0, 3.0)
    smap = SpacingMap(shape, zooms, target, tuple(map(tuple, affine)))
    assert smap.model_shape == ref.shape[1:]
    mine = ResampledVolume(_ArraySource(data), smap).read(Window((0, 0, 0), smap.model_shape))
    np.testing.assert_allclose(mine, ref, atol=2e-5)


def test_a_window_reads_only_its_box_and_equals_the_whole() -> None:
    data = np.random.default_rng(0).normal(0, 1, (2, 40, 30, 12)).astype(np.float32)
    smap = SpacingMap((40, 30, 12), (0.8, 0.8, 3.0), (1.5, 1.5, 1.5))
    whole = ResampledVolume(_ArraySource(data), smap).read(Window((0, 0, 0), smap.model_shape))
    src = _ArraySource(data)
    window = Window((5, 3, 7), (9, 8, 10))
    part = ResampledVolume(src, smap).read(window, [0, 1])
    np.testing.assert_array_equal(part, whole[(slice(None), *window.slices())])
    box = src.reads[0]
    assert box.size[0] <= 9 * 1.5 / 0.8 + 2 and box.size[2] <= 10 * 0.5 + 2  # not the whole volume


def test_nearest_map_back_is_the_inverse_on_the_input_grid() -> None:
    smap = SpacingMap((10, 10, 7), (1.0, 1.0, 3.0), (2.0, 2.0, 1.0))
    assert smap.model_shape == (6, 6, 19)
    # input voxel j lies at model index j / 2; halves round up
    assert list(smap.nearest_model_index(0, 0, 10)) == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
    assert list(smap.nearest_model_index(2, 0, 7)) == [0, 3, 6, 9, 12, 15, 18]


def test_no_map_when_spacing_unset_or_equal() -> None:
    assert spacing_map((4, 4, 4), (1.0, 1.0, 2.0), None) is None
    assert spacing_map((4, 4, 4), (1.0, 1.0, 2.0), (1.0, 1.0, 2.0)) is None
    assert spacing_map((4, 4, 4), (1.0, 1.0, 2.0), (1.0, 1.0, 1.0)) is not None
    with pytest.raises(ValueError, match="target spacing"):
        SpacingMap((4, 4, 4), (1.0, 1.0, 1.0), (1.0, 0.0, 1.0))


@settings(max_examples=30, deadline=None)
@given(
    shape=st.tuples(*(st.integers(2, 40),) * 3),
    angle=st.floats(-0.6, 0.6),
    zooms=st.tuples(*(st.sampled_from([0.7, 0.8, 1.0, 1.25, 2.5, 3.0]),) * 3),
    target=st.tuples(*(st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.3]),) * 3),
    origin=st.tuples(*(st.floats(-300, 300),) * 3),
)
def test_shape_of_a_rotated_reoriented_volume_is_monais(
    shape: tuple[int, int, int], angle: float, zooms: tuple[float, float, float],
    target: tuple[float, float, float], origin: tuple[float, float, float],
) -> None:
    from monai.data.utils import compute_shape_offset, zoom_affine
    from monai.transforms import Orientation

    from geoseg_pipeline.orientation import axis_map

    c, s = np.cos(angle), np.sin(angle)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[0.0, -c, s], [0.0, s, c], [-1.0, 0.0, 0.0]]) @ np.diag(zooms)  # an LPI-ish scan
    affine[:3, 3] = origin
    image = MetaTensor(torch.zeros((1, *shape)), affine=torch.from_numpy(affine))
    oriented = Orientation(axcodes="RAS")(image)
    amap = axis_map(affine, shape, "RAS")
    mine = amap.model_affine(affine)
    np.testing.assert_allclose(mine, np.asarray(oriented.affine), atol=1e-9)
    ref_affine = np.asarray(oriented.affine, dtype=float)
    ref = compute_shape_offset(oriented.shape[1:], ref_affine, zoom_affine(ref_affine, target, diagonal=False))[0]
    oriented_zooms = tuple(zooms[p] for p in amap.perm)
    smap = spacing_map(amap.model_shape, oriented_zooms, target, mine)
    assert smap is not None and smap.model_shape == tuple(int(v) for v in ref)
