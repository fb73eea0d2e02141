"""Large-model fit of ``model.type: huggingface``: a ViT's patch size and position-embedding
limits checked on the roi before any data is read (small random-weight BEiT and DPT-hybrid built
offline), BEiT windows of another size than its image size against transformers' forward with
``interpolate_pos_encoding`` blended by MONAI, and bf16 autocast on CPU against float32."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from hf_folders import assert_job_matches, beit, clipseg, dpt_hybrid, upernet_convnext
from monai.inferers import sliding_window_inference
from test_huggingface_models import segformer

from geoseg_pipeline.api import run_workflow
from geoseg_pipeline.errors import ModelError
from geoseg_pipeline.inference.loading import load_model, probe_model
from geoseg_pipeline.inference.predictor import Predictor
from geoseg_pipeline.spec import InferenceSpec, ModelSpec, parse_workflow
from geoseg_pipeline.spec.prompts import TextClasses

CPU = torch.device("cpu")


def beit_reference(folder: Path, data: np.ndarray, roi: int) -> np.ndarray:
    """transformers' BEiT per window (position embeddings interpolated for the window, logits
    upsampled bilinearly), blended by MONAI."""
    model = transformers.BeitForSemanticSegmentation.from_pretrained(folder, local_files_only=True).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True)

    def window(x: torch.Tensor) -> torch.Tensor:
        pixels = processor(images=list(x.numpy()), do_resize=False, do_center_crop=False, return_tensors="pt",
                           input_data_format="channels_first")["pixel_values"]
        logits = model(pixel_values=pixels, interpolate_pos_encoding=True).logits
        return torch.nn.functional.interpolate(logits, size=(roi, roi), mode="bilinear", align_corners=False)

    with torch.no_grad():
        out = sliding_window_inference(torch.from_numpy(data.astype(np.float32))[None], (roi, roi), 4, window,
                                       overlap=0.25, mode="gaussian")
    return np.asarray(out[0].numpy())


def test_a_vit_takes_windows_of_another_size_than_its_image_size(tmp_path: Path,
                                                                 write_raster: Callable[..., Path]) -> None:
    folder = beit(tmp_path / "beit", image_size=32, patch=8)
    data = np.random.default_rng(5).integers(200, 3000, (3, 100, 90)).astype("uint16")
    wf = {"inputs": {"paths": [str(write_raster("scene.tif", data))]},
          "model": {"type": "huggingface", "path": str(folder)},
          "tiling": {"roi_size": 48, "overlap": 0.25, "blend": "gaussian", "batch_size": 4, "block_size": 128},
          "output": {"directory": str(tmp_path / "out"), "formats": ["cog", "logits"]},
          "resources": {"workers": 1, "backend": "local"}}
    result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert result.ok, result.outcomes
    ref = beit_reference(folder, data, 48)
    assert_job_matches(tmp_path / "out" / "scene", ref)


def test_a_roi_that_is_no_multiple_of_the_patch_size_fails_the_job_before_any_data_is_read(
        tmp_path: Path, write_raster: Callable[..., Path]) -> None:
    folder = beit(tmp_path / "beit", image_size=32, patch=8)
    model = load_model(ModelSpec(type="huggingface", path=folder), CPU)
    with pytest.raises(ModelError, match=r"beit cuts windows into 8x8 patches \(patch_size in config\.json\): every "
                                         r"tiling\.roi_size must be a multiple of 8, got \[44, 48\]; for example "
                                         r"\[40, 48\] or \[48, 48\]"):
        probe_model(model, 3, (44, 48), CPU)
    data = np.zeros((3, 64, 64), dtype="uint16")
    wf = {"inputs": {"paths": [str(write_raster("scene.tif", data))]},
          "model": {"type": "huggingface", "path": str(folder)}, "tiling": {"roi_size": 44},
          "output": {"directory": str(tmp_path / "out")}, "resources": {"workers": 1, "backend": "local"}}
    result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert not result.ok
    assert [o.error for o in result.outcomes] == [f"model: {folder}: beit cuts windows into 8x8 patches (patch_size "
                                                  "in config.json): every tiling.roi_size must be a multiple of 8, "
                                                  "got [44, 44]; for example [40, 40] or [48, 48]"]
    assert not (tmp_path / "out" / "scene" / "labels.tif").exists()


def test_a_vit_that_cannot_interpolate_its_position_embeddings_names_its_image_size(tmp_path: Path) -> None:
    model = load_model(ModelSpec(type="huggingface", path=dpt_hybrid(tmp_path / "dpt", image_size=32)), CPU)
    with pytest.raises(ModelError, match=r"dpt takes windows of its image size \[32, 32\] only \(image_size in "
                                         r"config\.json; transformers cannot interpolate its position embeddings "
                                         r"for another size\): set tiling\.roi_size to \[32, 32\], got \[48, 48\]"):
        probe_model(model, 3, (48, 48), CPU)
    assert probe_model(model, 3, (32, 32), CPU).num_classes == 3


def test_a_convnext_backbone_needs_multiples_of_its_total_stride(tmp_path: Path) -> None:
    model = load_model(ModelSpec(type="huggingface", path=upernet_convnext(tmp_path / "upernet")), CPU)
    with pytest.raises(ModelError, match=r"upernet on convnext has a total stride of 32 \(patch_size 4, then 3 "
                                         r"downsamplings by 2\): every tiling\.roi_size must be a multiple of 32, "
                                         r"got \[48, 64\]; for example \[32, 64\] or \[64, 64\]"):
        probe_model(model, 3, (48, 64), CPU)
    assert probe_model(model, 3, (64, 96), CPU).num_classes == 3


@pytest.mark.parametrize("family", ["segformer", "beit", "clipseg"])
def test_bf16_autocast_on_cpu_stays_close_to_float32(tmp_path: Path, family: str) -> None:
    """``inference.precision: bf16`` runs the forward pass under CPU autocast: within 3 % of the
    largest float32 logit, the labels on at least 97 % of pixels (random weights give small
    margins between classes)."""
    folder = {"segformer": segformer, "beit": beit, "clipseg": clipseg}[family](tmp_path / family)
    text = TextClasses(prompts=("water", "forest", "bare soil")) if family == "clipseg" else None
    spec = ModelSpec(type="huggingface", path=folder, text_classes=text)
    channels = 4 if family == "segformer" else 3
    x = np.random.default_rng(9).integers(200, 3000, (4, channels, 48, 48)).astype(np.float32)
    exact = Predictor(spec, device="cpu").predict(x)
    half = Predictor(spec, device="cpu", options=InferenceSpec(precision="bf16")).predict(x)
    assert half.dtype == torch.float32 and half.shape == exact.shape
    error = float((half - exact).abs().max())
    assert 0 < error <= 0.03 * float(exact.abs().max())  # bf16 did run, and stays close
    assert float((half.argmax(1) == exact.argmax(1)).float().mean()) >= 0.97
