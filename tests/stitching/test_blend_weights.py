"""Blend weights equal MONAI's importance map bit for bit."""

from __future__ import annotations

import pytest
import torch
from monai.data.utils import compute_importance_map

from geoseg_pipeline.stitching.weights import importance_map

ROIS = [(1, 1), (2, 3), (7, 7), (16, 16), (33, 64), (96, 95), (256, 256), (1, 1, 1), (5, 8, 3), (32, 31, 17)]


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
@pytest.mark.parametrize("roi", ROIS, ids=str)
def test_equals_monai(roi: tuple[int, ...], mode: str) -> None:
    ours = importance_map(roi, mode)
    theirs = compute_importance_map(roi, mode=mode, sigma_scale=0.125, device="cpu", dtype=torch.float32)
    assert ours.dtype == torch.float32
    assert ours.shape == torch.Size(roi)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("sigma_scale", [0.05, 0.25, 1.0])
@pytest.mark.parametrize("roi", [(9, 12), (4, 5, 6)], ids=str)
def test_equals_monai_other_sigma(roi: tuple[int, ...], sigma_scale: float) -> None:
    ours = importance_map(roi, "gaussian", sigma_scale)
    theirs = compute_importance_map(roi, mode="gaussian", sigma_scale=sigma_scale, dtype=torch.float32)
    assert torch.equal(ours, theirs)


def test_gaussian_shape_of_the_weights() -> None:
    w = importance_map((65, 65), "gaussian")
    assert w.max().item() == 1.0
    assert w[32, 32].item() == 1.0  # the centre of an odd roi
    assert w[32, 32] > w[32, 16] > w[32, 0]
    assert w.min().item() == pytest.approx(1e-3)  # the tails are clamped at 1e-3
    assert w[0, 0] == w.min()
    assert torch.equal(w, w.flip(0)) and torch.equal(w, w.flip(1)) and torch.equal(w, w.T)


def test_unknown_mode() -> None:
    with pytest.raises(ValueError, match="got 'median'"):
        importance_map((8, 8), "median")


@pytest.mark.parametrize("roi", [(16, 32, 32), (20, 24, 28), (5, 7, 9)])
def test_nnunet_gaussian_is_nnunets(roi: tuple[int, int, int]) -> None:
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    compute_gaussian.cache_clear()
    ref = compute_gaussian(roi, 1 / 8, 10, dtype=torch.float16, device=torch.device("cpu")).float()
    torch.testing.assert_close(importance_map(roi, "nnunet"), ref, atol=0, rtol=0)
    ref2d = compute_gaussian(roi[1:], 1 / 8, 10, dtype=torch.float16, device=torch.device("cpu")).float()
    torch.testing.assert_close(importance_map((1, *roi[1:]), "nnunet2d")[0], ref2d, atol=0, rtol=0)
