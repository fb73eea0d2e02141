"""Lesion statistics of label volumes that arrive block by block: exact across block borders,
for any block shape, arrival order and connectivity."""

from __future__ import annotations

import itertools
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage
from scipy.spatial.distance import pdist

from geoseg_pipeline.geometry import Window
from geoseg_pipeline.statistics.lesions import Lesion, LesionTracker, label_volume_reference, summarize

CLASSES = (1, 2, 3)  # 4 is a label that is not a lesion class
LPS = np.array([[-0.7, 0, 0, 90.0], [0, -0.7, 0, 120.0], [0, 0, 3.0, -60.0], [0, 0, 0, 1]])
# voxel axis 0 runs along world z (3 mm), axis 1 along -y, axis 2 along -x; and a tilt
PERMUTED = np.array([[0, 0, -0.7, 10.0], [0, -0.7, 0, 20.0], [3.0, 0, 0, -5.0], [0, 0, 0, 1]])
_c, _s = math.cos(0.3), math.sin(0.3)
OBLIQUE = np.array([[1, 0, 0, 0], [0, _c, -_s, 0], [0, _s, _c, 0], [0, 0, 0, 1]]) @ PERMUTED
AFFINES = {"identity": np.eye(4), "lps": LPS, "permuted": PERMUTED, "oblique": OBLIQUE}
# real samples ship in tests/data/real; GEOSEG_REAL_DATA (when set and non-empty) points elsewhere
REAL = Path(os.environ.get("GEOSEG_REAL_DATA") or Path(__file__).resolve().parents[1] / "data" / "real")


def block_windows(shape: tuple[int, ...], block: tuple[int, ...]) -> list[Window]:
    """The block lattice of ``shape``, clipped at the far edges, row-major."""
    starts = itertools.product(*(range(0, n, b) for n, b in zip(shape, block, strict=True)))
    return [Window(s, tuple(min(b, n - a) for a, b, n in zip(s, block, shape, strict=True))) for s in starts]


def track(
    volume: np.ndarray,
    block: tuple[int, int, int],
    affine: np.ndarray | None = None,
    order: list[int] | None = None,
    *,
    connectivity: int = 26,
    min_voxels: int = 1,
    min_volume_ml: float = 0.0,
) -> list[Lesion]:
    """Feed ``volume`` to a tracker block by block in ``order`` (default: shuffled, seeded)."""
    windows = block_windows(volume.shape, block)
    if order is None:
        order = list(range(len(windows)))
        random.Random(0).shuffle(order)
    shape = (volume.shape[0], volume.shape[1], volume.shape[2])
    affine = np.eye(4) if affine is None else affine
    tracker = LesionTracker(CLASSES, affine, shape, connectivity, min_voxels, min_volume_ml)
    for i in order:
        tracker.add_block(windows[i], volume[windows[i].slices()].copy())
    assert tracker.pending_face_voxels == 0
    return tracker.finish()


def assert_same(got: list[Lesion], want: list[Lesion]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert (a.id, a.class_index, a.voxels) == (b.id, b.class_index, b.voxels)
        assert (a.bbox_min, a.bbox_max) == (b.bbox_min, b.bbox_max)
        assert a.volume_ml == pytest.approx(b.volume_ml, rel=1e-12)
        np.testing.assert_allclose(a.centroid_mm, b.centroid_mm, rtol=0, atol=1e-9)
        assert abs(a.longest_axial_diameter_mm - b.longest_axial_diameter_mm) <= 1e-9


def random_volume(shape: tuple[int, ...], seed: int, smooth: bool) -> np.ndarray:
    """Blobs (smoothed noise) or speckle of classes 0..4."""
    noise = np.random.default_rng(seed).random(shape)
    if smooth:
        noise = ndimage.uniform_filter(noise, 3, mode="nearest")
        noise = (noise - noise.min()) / max(float(np.ptp(noise)), 1e-12)
    return np.digitize(noise, [0.35, 0.5, 0.6, 0.7]).astype(np.uint8)


@st.composite
def volumes_and_blocks(draw: st.DrawFn) -> tuple[np.ndarray, tuple[int, int, int], list[int], str]:
    shape = tuple(draw(st.integers(1, 24)) for _ in range(3))
    # at most 6 blocks per axis keeps an example fast; small axes still get 1-voxel blocks
    block = tuple(draw(st.integers(max(1, -(-n // 6)), 12)) for n in shape)
    volume = random_volume(shape, draw(st.integers(0, 2**32 - 1)), draw(st.booleans()))
    order = draw(st.permutations(range(len(block_windows(shape, block)))))
    return volume, (block[0], block[1], block[2]), list(order), draw(st.sampled_from(sorted(AFFINES)))


@pytest.mark.parametrize("connectivity", [6, 18, 26])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=volumes_and_blocks())
def test_blockwise_equals_whole_volume(
    connectivity: int, case: tuple[np.ndarray, tuple[int, int, int], list[int], str]
) -> None:
    volume, block, order, affine_name = case
    affine = AFFINES[affine_name]
    want = label_volume_reference(volume, CLASSES, connectivity, affine)
    structure = ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])
    assert len(want) == sum(ndimage.label(volume == c, structure)[1] for c in CLASSES)
    assert sum(lesion.voxels for lesion in want) == np.isin(volume, CLASSES).sum()
    assert_same(track(volume, block, affine, order, connectivity=connectivity), want)


@pytest.mark.parametrize("radius", [3, 6, 9])
def test_sphere_volume_and_diameter(radius: int) -> None:
    n = 2 * radius + 5
    grid = np.indices((n, n, n)) - (radius + 2)
    volume = ((grid**2).sum(axis=0) <= radius**2).astype(np.uint8)
    (lesion,) = track(volume, (5, 4, 6))
    assert lesion.voxels == volume.sum()
    assert lesion.volume_ml == pytest.approx(lesion.voxels * 0.001)
    assert lesion.volume_ml == pytest.approx(4 / 3 * math.pi * radius**3 / 1000, rel=0.25)
    assert abs(lesion.longest_axial_diameter_mm - 2 * radius) <= 1.0
    assert lesion.centroid_mm == pytest.approx((radius + 2,) * 3)
    assert lesion.bbox_min == (2, 2, 2) and lesion.bbox_max == (2 * radius + 2,) * 3


def test_single_voxel_lesion_has_zero_diameter() -> None:
    volume = np.zeros((3, 3, 3), np.uint8)
    volume[1, 1, 1] = 2
    (lesion,) = track(volume, (2, 2, 2))
    assert (lesion.class_index, lesion.voxels, lesion.longest_axial_diameter_mm) == (2, 1, 0.0)


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_l_shape_across_four_blocks_is_one_lesion(connectivity: int) -> None:
    volume = np.zeros((8, 8, 3), np.uint8)
    volume[0:8, 3:5, 1] = 1  # the long arm straddles the column border of the blocks
    volume[6:8, 3:8, 1] = 1  # the foot runs into the right-hand blocks
    windows = block_windows(volume.shape, (4, 4, 3))
    assert sum(bool(volume[w.slices()].any()) for w in windows) == 4
    (lesion,) = track(volume, (4, 4, 3), connectivity=connectivity)
    assert lesion.voxels == 16 + 6
    assert (lesion.bbox_min, lesion.bbox_max) == ((0, 3, 1), (7, 7, 1))
    assert lesion.longest_axial_diameter_mm == pytest.approx(math.hypot(7, 4))  # (0,3)-(7,7)


@pytest.mark.parametrize(
    ("second", "counts"),
    [
        ((slice(4, 6), slice(4, 6), slice(4, 6)), {6: 2, 18: 2, 26: 1}),  # corner to corner
        ((slice(4, 6), slice(4, 6), slice(2, 4)), {6: 2, 18: 1, 26: 1}),  # edge to edge
        ((slice(4, 6), slice(2, 4), slice(2, 4)), {6: 1, 18: 1, 26: 1}),  # face to face
    ],
)
def test_touching_across_block_corners_edges_and_faces(second: tuple[slice, ...], counts: dict[int, int]) -> None:
    volume = np.zeros((8, 8, 8), np.uint8)
    volume[2:4, 2:4, 2:4] = 1
    volume[second] = 1  # meets the first cube exactly where the 4x4x4 blocks meet
    for connectivity, count in counts.items():
        lesions = track(volume, (4, 4, 4), connectivity=connectivity)
        assert len(lesions) == count, connectivity
        assert sum(lesion.voxels for lesion in lesions) == 16
        assert_same(lesions, label_volume_reference(volume, CLASSES, connectivity, np.eye(4)))


def test_touching_lesions_of_different_classes_stay_apart() -> None:
    volume = np.zeros((4, 4, 4), np.uint8)
    volume[:2] = 1
    volume[2:] = 2
    lesions = track(volume, (2, 2, 2))
    assert [(lesion.class_index, lesion.voxels) for lesion in lesions] == [(1, 32), (2, 32)]


@pytest.mark.parametrize("affine_name", ["lps", "permuted", "oblique"])
def test_centroid_is_the_affine_of_the_voxel_centroid(affine_name: str) -> None:
    affine = AFFINES[affine_name]
    volume = np.zeros((9, 10, 11), np.uint8)
    volume[1:5, 2:9, 3:5] = 1
    volume[4:8, 7:9, 4:10] = 1
    (lesion,) = track(volume, (4, 3, 5), affine)
    index = np.argwhere(volume == 1).mean(axis=0)
    np.testing.assert_allclose(lesion.centroid_mm, affine[:3, :3] @ index + affine[:3, 3], rtol=0, atol=1e-9)
    assert lesion.volume_ml == pytest.approx(volume.sum() * 0.7 * 0.7 * 3.0 / 1000)


def test_axial_slices_follow_the_world_z_axis() -> None:
    volume = np.zeros((5, 8, 9), np.uint8)
    volume[2, 1:5, 2:8] = 1  # a rectangle in the plane i = 2, world-axial under PERMUTED
    volume[0:5, 6, 1] = 1  # a rod along voxel axis 0 (world z): one voxel per axial slice
    rectangle, rod = track(volume, (2, 3, 4), PERMUTED)
    assert rectangle.longest_axial_diameter_mm == pytest.approx(math.hypot(3 * 0.7, 5 * 0.7))
    assert rod.longest_axial_diameter_mm == 0.0
    assert rod.volume_ml == pytest.approx(5 * 0.7 * 0.7 * 3.0 / 1000)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), affine_name=st.sampled_from(sorted(AFFINES)))
def test_diameter_is_the_farthest_pair_in_a_slice(seed: int, affine_name: str) -> None:
    affine = AFFINES[affine_name]
    volume = random_volume((10, 11, 12), seed, smooth=True)
    lab, n = ndimage.label(volume == 1, np.ones((3, 3, 3)))
    for k in range(1, n + 1):
        pts = np.argwhere(lab == k)
        axis = int(np.argmax(np.abs(affine[2, :3])))
        mm = pts @ affine[:3, :3].T
        per_slice = [mm[pts[:, axis] == s] for s in np.unique(pts[:, axis])]
        brute = max((float(pdist(p).max()) for p in per_slice if len(p) > 1), default=0.0)
        (lesion,) = track(np.where(lab == k, 1, 0).astype(np.uint8), (3, 4, 5), affine)
        assert lesion.longest_axial_diameter_mm == pytest.approx(brute, abs=1e-9)


def test_size_filters_and_ordering() -> None:
    volume = np.zeros((10, 10, 10), np.uint8)
    volume[0, 0, 0] = 1  # 1 voxel
    volume[5:8, 5:8, 5:8] = 1  # 27 voxels
    volume[0:2, 8:10, 8:10] = 3  # 8 voxels, first in C order among the 8-voxel ones
    volume[8:10, 0:2, 0:2] = 2  # 8 voxels
    got = [(x.id, x.class_index, x.voxels) for x in track(volume, (4, 4, 4))]
    assert got == [(1, 1, 27), (2, 3, 8), (3, 2, 8), (4, 1, 1)]
    assert [x.voxels for x in track(volume, (4, 4, 4), min_voxels=2)] == [27, 8, 8]
    assert [x.voxels for x in track(volume, (4, 4, 4), min_volume_ml=0.01)] == [27]
    assert [x.id for x in label_volume_reference(volume, CLASSES, 26, np.eye(4), min_voxels=8)] == [1, 2, 3]


def test_pending_faces_stay_bounded() -> None:
    volume = random_volume((32, 32, 32), 7, smooth=True)
    tracker = LesionTracker(CLASSES, np.eye(4), (32, 32, 32))
    peak = 0
    for window in block_windows(volume.shape, (8, 8, 8)):
        tracker.add_block(window, volume[window.slices()])
        peak = max(peak, tracker.pending_face_voxels)
    assert tracker.pending_face_voxels == 0
    # row-major arrival holds the faces of about two layers of blocks, never the volume
    assert peak < volume.size // 4
    assert_same(tracker.finish(), label_volume_reference(volume, CLASSES, 26, np.eye(4)))


def test_summarize() -> None:
    volume = np.zeros((6, 6, 6), np.uint8)
    volume[0:2, 0:2, 0:2] = 1
    volume[4:6, 4:6, 4:6] = 1
    volume[0, 5, 5] = 3
    summary = summarize(track(volume, (3, 3, 3), LPS), classes=CLASSES)
    voxel_ml = 0.7 * 0.7 * 3.0 / 1000
    assert list(summary) == [1, 2, 3]
    assert summary[1]["lesions"] == 2 and summary[1]["burden_ml"] == pytest.approx(16 * voxel_ml)
    assert summary[2] == {"lesions": 0, "burden_ml": 0.0}
    assert summary[3]["lesions"] == 1 and summary[3]["burden_ml"] == pytest.approx(voxel_ml)


def test_bad_arguments_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="connectivity must be 6, 18 or 26, got 8"):
        LesionTracker(CLASSES, np.eye(4), (4, 4, 4), connectivity=8)
    with pytest.raises(ValueError, match="singular"):
        LesionTracker(CLASSES, np.diag([1.0, 0.0, 1.0, 1.0]), (4, 4, 4))
    with pytest.raises(ValueError, match="distinct"):
        LesionTracker([1, 1], np.eye(4), (4, 4, 4))
    tracker = LesionTracker(CLASSES, np.eye(4), (4, 4, 4))
    with pytest.raises(ValueError, match="outside the volume"):
        tracker.add_block(Window((2, 0, 0), (4, 4, 4)), np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match="do not fit"):
        tracker.add_block(Window((0, 0, 0), (2, 2, 2)), np.zeros((2, 2, 3)))
    tracker.add_block(Window((0, 0, 0), (2, 4, 4)), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="covered 32 of 64 voxels"):
        tracker.finish()
    with pytest.raises(ValueError, match="already added"):
        tracker.add_block(Window((0, 0, 0), (2, 4, 4)), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="more voxels than"):  # overlapping, not repeated
        tracker.add_block(Window((1, 0, 0), (3, 4, 4)), np.zeros((3, 4, 4)))


@pytest.mark.parametrize("connectivity", [6, 26])
def test_real_brain_label_in_64x64x8_blocks(connectivity: int) -> None:
    import nibabel as nib

    path = REAL / "brain1_label.nii.gz"
    if not path.exists():
        pytest.fail(f"real sample {path} is missing: it ships in tests/data/real "
                    "(or GEOSEG_REAL_DATA points at a folder without it)")
    image = nib.load(path)
    volume = np.asarray(image.dataobj)
    lesions = track(volume, (64, 64, 8), image.affine, connectivity=connectivity)
    assert [x.voxels for x in lesions] == [3524, 613]  # README: 4,137 voxels, 2 components
    assert sum(x.volume_ml for x in lesions) * 1000 == pytest.approx(16412.66, abs=0.01)
    assert_same(lesions, label_volume_reference(volume, [1], connectivity, image.affine))
