"""Shared helpers of the vision tests: a small float GeoTIFF scene, a whole job through geoseg's api
(local backend), and the reference: a network's own forward pass blended by MONAI's
``sliding_window_inference`` on the same windows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from monai.inferers import sliding_window_inference

from geoseg_pipeline.api import run_workflow
from geoseg_pipeline.spec import parse_workflow

ROI, OVERLAP = 64, 0.25


def scene(write_raster: Callable[..., Path], bands: int, rows: int = 150, cols: int = 170) -> tuple[Path, np.ndarray]:
    """A float32 GeoTIFF of standardized reflectances ``(bands, rows, cols)`` and its pixels."""
    data = np.random.default_rng(7).normal(0.0, 1.0, (bands, rows, cols)).astype("float32")
    return write_raster("scene.tif", data), data


def run_job(tmp_path: Path, src: Path, model: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """geoseg's blended logits and labels of ``src`` with the ``model`` section."""
    wf = {
        "inputs": {"paths": [str(src)]},
        "model": model,
        "tiling": {"roi_size": ROI, "overlap": OVERLAP, "blend": "gaussian", "batch_size": 4, "block_size": 128},
        "output": {"directory": str(tmp_path / "out"), "formats": ["cog", "logits"]},
        "resources": {"workers": 1, "backend": "local"},
    }
    result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert result.ok, result.outcomes
    with rasterio.open(tmp_path / "out" / "scene" / "logits.tif") as ds:
        logits = ds.read()
    with rasterio.open(tmp_path / "out" / "scene" / "labels.tif") as ds:
        labels = ds.read(1)
    return logits, labels


def monai_reference(forward: Callable[[torch.Tensor], torch.Tensor], data: np.ndarray) -> np.ndarray:
    """``forward`` on each window, blended by MONAI (gaussian, the job's roi and overlap)."""
    with torch.no_grad():
        out = sliding_window_inference(torch.from_numpy(data)[None], (ROI, ROI), 4, forward, overlap=OVERLAP,
                                       mode="gaussian")
    assert isinstance(out, torch.Tensor)
    return np.asarray(out[0].numpy())


def assert_matches(logits: np.ndarray, labels: np.ndarray, ref: np.ndarray) -> None:
    """Logits within 1e-4 (relative to their scale), labels on at least 99.99 % of pixels, and
    more than one class (a constant map would prove nothing)."""
    assert logits.shape == ref.shape
    assert np.abs(logits - ref).max() < 1e-4 * max(1.0, float(np.abs(ref).max()))
    assert (labels == ref.argmax(axis=0)).mean() >= 0.9999
    assert len(np.unique(labels)) > 1
