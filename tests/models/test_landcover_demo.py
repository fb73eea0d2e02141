"""The bundled land-cover demo model: weights, shapes, TorchScript, accuracy on unseen data."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
import torch

from geoseg_pipeline.demo.scenes import LABEL_NODATA, write_landcover_scene
from geoseg_pipeline.models.landcover_demo import (
    IN_CHANNELS,
    NUM_CLASSES,
    WEIGHTS_PATH,
    LandcoverDemoNet,
    load_landcover_demo,
)

UNSEEN_SEED = 4242
"""Not among the training seeds (0..3) nor the evaluation seed of the training script (1000)."""


def test_weights_are_a_small_plain_state_dict() -> None:
    assert WEIGHTS_PATH.stat().st_size < 200_000
    state = torch.load(WEIGHTS_PATH, weights_only=True, map_location="cpu")
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert set(state) == set(LandcoverDemoNet().state_dict())


def test_loader_returns_eval_mode_net() -> None:
    net = load_landcover_demo()
    assert isinstance(net, LandcoverDemoNet)
    assert not net.training


def test_output_shape_for_odd_sizes() -> None:
    net = load_landcover_demo()
    with torch.inference_mode():
        for height, width in [(100, 77), (1, 1), (3, 130)]:
            out = net(torch.full((2, IN_CHANNELS, height, width), 1500.0))
            assert out.shape == (2, NUM_CLASSES, height, width)
            assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_torchscript_matches_eager() -> None:
    net = load_landcover_demo()
    with warnings.catch_warnings():
        # torch >= 2.5 deprecates torch.jit.script, which the pipeline still supports.
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(net)
    x = torch.rand(1, IN_CHANNELS, 100, 77, generator=torch.Generator().manual_seed(0)) * 4000
    with torch.inference_mode():
        torch.testing.assert_close(scripted(x), net(x), rtol=0, atol=0)


def test_miou_on_unseen_scene(tmp_path: Path) -> None:
    scene, labels = tmp_path / "scene.tif", tmp_path / "labels.tif"
    write_landcover_scene(scene, 512, 512, UNSEEN_SEED, labels_path=labels)
    with rasterio.open(scene) as src, rasterio.open(labels) as ref:
        image, reference = src.read().astype(np.float32), ref.read(1).astype(np.int64)
    with torch.inference_mode():
        predicted = load_landcover_demo()(torch.from_numpy(image)[None]).argmax(dim=1)[0].numpy()
    valid = reference != LABEL_NODATA
    pairs = reference[valid] * NUM_CLASSES + predicted[valid]
    confusion = np.bincount(pairs, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)
    intersection = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - intersection
    assert (union > 0).all(), "every class should occur in the unseen scene"
    iou = intersection / union
    assert iou.mean() >= 0.8, f"per-class IoU {iou.round(3)}"
