"""The bundled CT demo model: weights, window, shapes, TorchScript, tumour volume on unseen data."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.inferers.utils import sliding_window_inference

from geoseg_pipeline.demo.phantoms import write_ct_phantom
from geoseg_pipeline.models.ct_demo import (
    HU_WINDOW,
    IN_CHANNELS,
    NUM_CLASSES,
    WEIGHTS_PATH,
    CtDemoNet,
    load_ct_demo,
)

UNSEEN_SEED = 4242
"""Not among the training (0..29), calibration (500..507) or evaluation seeds (1000..1005) of the training script."""


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_weights_are_a_small_plain_state_dict() -> None:
    assert WEIGHTS_PATH.stat().st_size < 1_000_000
    state = torch.load(WEIGHTS_PATH, weights_only=True, map_location="cpu")
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert set(state) == set(CtDemoNet().state_dict())


def test_loader_returns_eval_mode_net() -> None:
    net = load_ct_demo()
    assert isinstance(net, CtDemoNet)
    assert not net.training


def test_output_shape_for_odd_sizes() -> None:
    net = load_ct_demo()
    with torch.inference_mode():
        for size in [(37, 41, 19), (1, 1, 1), (5, 64, 3)]:
            out = net(torch.full((1, IN_CHANNELS, *size), 40.0))
            assert out.shape == (1, NUM_CLASSES, *size)
            assert out.dtype == torch.float32 and torch.isfinite(out).all()
        assert net(torch.zeros(2, IN_CHANNELS, 8, 8, 4)).shape == (2, NUM_CLASSES, 8, 8, 4)


def test_ct_window_is_inside_the_model() -> None:
    net = load_ct_demo()
    x = (torch.rand(1, IN_CHANNELS, 24, 20, 10, generator=_generator()) - 0.5) * 3000
    with torch.inference_mode():
        torch.testing.assert_close(net(x), net(x.clamp(*HU_WINDOW)), rtol=0, atol=0)


def test_torchscript_matches_eager() -> None:
    net = load_ct_demo()
    with warnings.catch_warnings():
        # torch >= 2.5 deprecates torch.jit.script, which the pipeline still supports.
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(net)
    x = torch.rand(1, IN_CHANNELS, 37, 41, 19, generator=_generator()) * 400 - 150
    with torch.inference_mode():
        torch.testing.assert_close(scripted(x), net(x), rtol=1e-5, atol=1e-5)


def test_tumour_volume_on_unseen_phantom(tmp_path: Path) -> None:
    image_path, labels_path = tmp_path / "ct.nii.gz", tmp_path / "labels.nii.gz"
    truth = write_ct_phantom(image_path, UNSEEN_SEED, labels_path=labels_path)  # the default grid
    image, reference = (nib.load(path) for path in (image_path, labels_path))
    assert isinstance(image, nib.Nifti1Image) and isinstance(reference, nib.Nifti1Image)
    hu = torch.from_numpy(np.asarray(image.dataobj, dtype=np.float32))
    with torch.inference_mode():
        logits = sliding_window_inference(
            hu[None, None], (64, 64, 32), 4, load_ct_demo(), overlap=0.25, mode="gaussian"
        )
    assert isinstance(logits, torch.Tensor)
    predicted = logits.argmax(dim=1)[0].numpy()
    tumour, reference_tumour = predicted == 2, np.asarray(reference.dataobj) == 2
    dice = 2 * (tumour & reference_tumour).sum() / (tumour.sum() + reference_tumour.sum())
    volume_ml = tumour.sum() * truth.voxel_volume_ml
    assert dice >= 0.9, f"tumour Dice {dice:.3f}"
    assert abs(volume_ml / truth.total_tumour_volume_ml - 1) <= 0.1, (volume_ml, truth.total_tumour_volume_ml)
