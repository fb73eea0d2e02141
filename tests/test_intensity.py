"""Intensity preparation equals MONAI's transforms on the whole volume."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import NormalizeIntensity, ScaleIntensityRange

from geoseg_pipeline.errors import InputDataError
from geoseg_pipeline.intensity import nonzero_mean_std
from geoseg_pipeline.preprocess import Preprocessing, to_model_input
from geoseg_pipeline.sources import open_volume_source
from geoseg_pipeline.spec import IntensitySpec, PreprocessingSpec


def _mr(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    data = np.zeros((30, 26, 19), np.float32)
    data[4:26, 3:23, 2:17] = rng.normal(400, 80, (22, 20, 15))
    path = tmp_path / "mr.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([0.9, 0.9, 3.0, 1.0])), path)
    return path, data


def test_zscore_over_nonzero_voxels_equals_monai(tmp_path: Path) -> None:
    path, data = _mr(tmp_path)
    src = open_volume_source(str(path), tmp_path / "staging")
    mean, std = nonzero_mean_std(src, [0], slab=4)  # several slabs
    src.close()
    prep = Preprocessing((1,), mean, std, nonzero_only=True)
    ours = to_model_input(data[None], np.ones(data.shape, bool), prep, "mr")
    ref = NormalizeIntensity(nonzero=True)(torch.from_numpy(data[None])).numpy()
    assert np.abs(ours - ref).max() < 1e-4
    assert (ours[0][data == 0] == 0).all()


def test_ct_window_equals_monai_scale_intensity_range() -> None:
    hu = np.random.default_rng(1).uniform(-1000, 1500, (1, 12, 10, 8)).astype(np.float32)
    prep = Preprocessing((1,), window=(-150.0, 250.0))
    ours = to_model_input(hu, np.ones(hu.shape[1:], bool), prep, "ct")
    ref = ScaleIntensityRange(a_min=-150, a_max=250, b_min=0.0, b_max=1.0, clip=True)(torch.from_numpy(hu)).numpy()
    assert np.abs(ours - ref).max() < 1e-6


def test_zscore_refuses_an_empty_volume(tmp_path: Path) -> None:
    path = tmp_path / "zeros.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), path)
    src = open_volume_source(str(path))
    with pytest.raises(InputDataError, match="no nonzero voxel"):
        nonzero_mean_std(src, [0])


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"mode": "window"}, "needs window"),
        ({"mode": "window", "window": [250, -150]}, "low < high"),
        ({"mode": "zscore_nonzero", "window": [0, 1]}, "window goes with mode 'window'"),
    ],
)
def test_intensity_spec_errors(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        IntensitySpec.model_validate(data)


def test_normalize_and_zscore_are_exclusive() -> None:
    with pytest.raises(ValueError, match="either normalize"):
        PreprocessingSpec.model_validate(
            {"normalize": {"mean": [0], "std": [1]}, "intensity": {"mode": "zscore_nonzero"}}
        )
