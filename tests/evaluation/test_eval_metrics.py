"""Per-class metrics on hand-made masks: Dice, IoU, HD95 (hand-derived, scipy, MONAI), absent classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics.hausdorff_distance import compute_hausdorff_distance
from monai.metrics.meandice import compute_dice
from monai.metrics.meaniou import compute_iou
from scipy import ndimage

from geoseg_pipeline.evaluation import overlap
from geoseg_pipeline.evaluation.metrics import bounding_box, hd95_distance
from geoseg_pipeline.evaluation.runner import label_counts


def _mask(shape: tuple[int, ...], *boxes: tuple[slice | int, ...]) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    for b in boxes:
        m[b] = True
    return m


def test_dice_and_iou_of_hand_made_masks() -> None:
    # prediction 4 pixels, reference 6, 3 shared: Dice 2*3/(4+6), IoU 3/(4+6-3)
    pred = _mask((5, 6), np.s_[1, 0:4])
    ref = _mask((5, 6), np.s_[1, 1:4], np.s_[3, 0:3])
    o = overlap(pred, ref, None)
    assert o.presence == "both"
    assert o.dice == pytest.approx(0.6)
    assert o.iou == pytest.approx(3 / 7)


def test_identical_masks_score_one_and_zero_distance() -> None:
    m = _mask((6, 6, 6), np.s_[1:4, 2:5, 0:2])
    o = overlap(m, m.copy(), (1.0, 2.0, 3.0))
    assert (o.dice, o.iou, o.hd95) == pytest.approx((1.0, 1.0, 0.0))


def test_hd95_single_voxels_on_an_anisotropic_grid() -> None:
    # one voxel each, three steps apart along k (2.5 mm): every surface distance is 7.5 mm
    pred, ref = _mask((6, 6, 8), np.s_[2, 2, 2]), _mask((6, 6, 8), np.s_[2, 2, 5])
    assert hd95_distance(pred, ref, (1.0, 1.0, 2.5)) == pytest.approx(7.5)
    assert hd95_distance(pred, ref, None) == pytest.approx(3.0)  # in voxels


@pytest.mark.parametrize(("axis", "expected"), [(0, 1.0), (1, 2.0), (2, 3.0)])
def test_hd95_of_a_block_shifted_one_voxel_is_that_axis_spacing(axis: int, expected: float) -> None:
    # 2x2x2 blocks are all surface; half of each block's voxels lie on the other block
    # (distance 0), the other half one step away: the 95th percentile is one step, in mm
    ref = _mask((8, 8, 8), np.s_[2:4, 2:4, 2:4])
    pred = np.roll(ref, 1, axis=axis)
    o = overlap(pred, ref, (1.0, 2.0, 3.0))
    assert o.hd95 == pytest.approx(expected)
    assert o.dice == pytest.approx(0.5)
    assert o.iou == pytest.approx(1 / 3)


def _scipy_hd95(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Edges by erosion (outside counts as background), exact EDT with spacing, 95th percentiles."""
    def edges(m: np.ndarray) -> np.ndarray:
        out: np.ndarray = m & ~ndimage.binary_erosion(m, border_value=0)
        return out

    ep, er = edges(pred), edges(ref)
    to_ref = ndimage.distance_transform_edt(~er, sampling=spacing)[ep]
    to_pred = ndimage.distance_transform_edt(~ep, sampling=spacing)[er]
    return max(float(np.percentile(to_ref, 95)), float(np.percentile(to_pred, 95)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_matches_scipy_and_monai_on_random_blobs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape, spacing = (14, 12, 10), (0.7, 1.3, 2.9)
    pred = ndimage.binary_dilation(rng.random(shape) > 0.97, iterations=2)
    ref = ndimage.binary_dilation(rng.random(shape) > 0.97, iterations=2)
    ours = hd95_distance(pred, ref, spacing)
    assert ours == pytest.approx(_scipy_hd95(pred, ref, spacing), rel=1e-5)
    monai = compute_hausdorff_distance(torch.from_numpy(pred)[None, None], torch.from_numpy(ref)[None, None],
                                       include_background=True, percentile=95, spacing=list(spacing))
    assert ours == pytest.approx(float(monai[0, 0]), rel=1e-5)


def test_hd95_in_2d_uses_row_and_column_spacing() -> None:
    ref = _mask((8, 8), np.s_[2:4, 2:5])
    down, right = np.roll(ref, 1, axis=0), np.roll(ref, 1, axis=1)
    assert hd95_distance(down, ref, (20.0, 10.0)) == pytest.approx(20.0)
    assert hd95_distance(right, ref, (20.0, 10.0)) == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("pred_box", "ref_box", "presence", "dice"),
    [
        (None, None, "neither", None),
        (None, np.s_[1:3, 1:3], "reference_only", 0.0),
        (np.s_[1:3, 1:3], None, "prediction_only", 0.0),
    ],
)
def test_absent_classes(pred_box: tuple[slice, ...] | None, ref_box: tuple[slice, ...] | None, presence: str,
                        dice: float | None) -> None:
    pred = _mask((5, 5), *([pred_box] if pred_box else []))
    ref = _mask((5, 5), *([ref_box] if ref_box else []))
    o = overlap(pred, ref, (1.0, 1.0))
    assert o.presence == presence
    assert o.dice == dice and o.iou == dice
    assert o.hd95 is None


def test_hd95_can_be_switched_off() -> None:
    m = _mask((5, 5), np.s_[1:3, 1:3])
    o = overlap(m, np.roll(m, 1, axis=0), None, hausdorff=False)
    assert o.hd95 is None and o.dice == pytest.approx(0.5)


def test_bounding_box_covers_both_masks() -> None:
    a, b = _mask((6, 7, 8), np.s_[1, 2, 3]), _mask((6, 7, 8), np.s_[4, 0, 5])
    assert bounding_box(a, b) == (slice(1, 5), slice(0, 3), slice(3, 6))
    assert bounding_box(np.zeros((3, 3), bool)) is None


def test_label_counts_in_steps_with_a_validity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    from geoseg_pipeline.evaluation import runner

    monkeypatch.setattr(runner, "COUNT_CHUNK", 7)  # several slabs, whatever the memory order
    labels = np.asfortranarray(np.arange(60, dtype=np.uint8).reshape(3, 4, 5) % 4)
    valid = labels != 3
    assert label_counts(labels, valid) == {0: 15, 1: 15, 2: 15}
    assert label_counts(labels.astype(np.uint32), None) == {0: 15, 1: 15, 2: 15, 3: 15}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_dice_and_iou_equal_monai_compute_dice_and_compute_iou(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from geoseg_pipeline.evaluation import metrics

    monkeypatch.setattr(metrics, "CONFUSION_CHUNK", 97)  # many chunks, one ending mid-row
    rng = np.random.default_rng(seed)
    pred, ref = rng.random((9, 11, 7)) > 0.6, rng.random((9, 11, 7)) > 0.5
    pt, rt = torch.from_numpy(pred)[None, None], torch.from_numpy(ref)[None, None]
    o = overlap(pred, ref, None)
    assert o.dice == pytest.approx(float(compute_dice(pt, rt, include_background=True, ignore_empty=False)[0, 0]))
    assert o.iou == pytest.approx(float(compute_iou(pt, rt, include_background=True, ignore_empty=False)[0, 0]))


def test_fortran_ordered_masks_keep_each_axis_spacing() -> None:
    # NIfTI arrays come in Fortran order; the metrics work on them in memory order
    ref = _mask((6, 7, 8), np.s_[2:4, 2:4, 2:4])
    for axis, expected in ((0, 1.0), (1, 2.0), (2, 3.0)):
        pred = np.roll(ref, 1, axis=axis)
        o = overlap(np.asfortranarray(pred), np.asfortranarray(ref), (1.0, 2.0, 3.0))
        assert o.hd95 == pytest.approx(expected)
