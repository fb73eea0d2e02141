"""More classes than a byte holds (whole-body CT models have over 100; some land-cover legends
over 255): labels are uint16 in every output, with the right nodata, and equal the model's own
per-pixel argmax, through a whole job on the local backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import rasterio
import torch
import zarr

from geoseg_pipeline.api import predict

CLASSES = 300


class _Nearest(torch.nn.Module):
    """Class ``c`` scores ``-(x - c)²``: the argmax is the input value rounded, pixel by pixel,
    so that every blend of overlapping windows has the same argmax as the model alone."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1, self.classes] + [1] * (x.dim() - 2)
        centres = torch.arange(self.classes, dtype=x.dtype, device=x.device).view(shape)
        return -((x[:, :1] - centres) ** 2)


def _model(tmp_path: Path) -> Path:
    path = tmp_path / "nearest.pt"
    torch.jit.script(_Nearest(CLASSES)).save(str(path))
    return path


def test_a_raster_with_300_classes_writes_uint16_labels_and_nodata(
    tmp_path: Path, write_raster: Callable[..., Path],
) -> None:
    rng = np.random.default_rng(3)
    values = rng.integers(0, CLASSES, (1, 150, 170)).astype(np.float32)
    values[0, 20:40, 30:90] = -1.0  # nodata
    scene = write_raster("scene.tif", values, nodata=-1.0)
    result = predict([scene], str(_model(tmp_path)), tmp_path / "out", roi_size=64, block_size=64, workers=2,
                     progress=False)
    assert result.ok, result.outcomes
    with rasterio.open(tmp_path / "out" / "scene" / "labels.tif") as ds:
        assert ds.dtypes == ("uint16",) and ds.nodata == 65535
        labels = ds.read(1)
    expected = values[0].astype(np.uint16)
    expected[values[0] < 0] = 65535
    np.testing.assert_array_equal(labels, expected)
    assert labels[labels != 65535].max() > 255  # classes above a byte are there


def test_a_volume_with_300_classes_writes_uint16_nifti_and_zarr(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    values = rng.integers(0, CLASSES, (40, 36, 20)).astype(np.float32)
    nib.save(nib.Nifti1Image(values, np.diag([0.9, 0.9, 2.5, 1.0])), tmp_path / "vol.nii.gz")
    result = predict([tmp_path / "vol.nii.gz"], str(_model(tmp_path)), tmp_path / "out", roi_size=(16, 16, 8),
                     block_size=16, workers=2, formats=["nifti", "zarr"], progress=False)
    assert result.ok, result.outcomes
    img = nib.load(tmp_path / "out" / "vol" / "labels.nii.gz")
    assert img.get_data_dtype() == np.uint16
    np.testing.assert_array_equal(np.asarray(img.dataobj), values.astype(np.uint16))
    stored = zarr.open_group(str(tmp_path / "out" / "vol" / "labels.zarr"), mode="r")["0"]  # OME-Zarr level 0
    assert stored.dtype == np.uint16
    np.testing.assert_array_equal(stored[:], values.astype(np.uint16))
