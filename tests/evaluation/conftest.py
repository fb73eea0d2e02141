"""Tiny label maps written on the fly: GeoTIFFs (rasterio) and NIfTI volumes (nibabel)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

#: 10 m wide, 20 m tall pixels in UTM 33N: HD95 along rows and columns differ.
UTM_TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -20.0, 5200000.0)


def _write_tif(path: Path, labels: np.ndarray, *, crs: str | None = "EPSG:32633", transform: Affine = UTM_TRANSFORM,
               nodata: float | None = None, class_names: Mapping[int, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # an identity transform, on purpose
        with rasterio.open(path, "w", driver="GTiff", width=labels.shape[1], height=labels.shape[0], count=1,
                           dtype=labels.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
            dst.write(labels, 1)
            if class_names:
                dst.update_tags(1, **{f"class_{k}": v for k, v in class_names.items()})
    return path


def _write_nii(path: Path, labels: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.0, 2.0, 3.0, 1.0]) if affine is None else affine
    image = nib.Nifti1Image(labels, affine)  # type: ignore[no-untyped-call]
    nib.save(image, path)
    return path


@pytest.fixture()
def write_tif() -> Callable[..., Path]:
    """``write_tif(path, labels2d, crs=..., transform=..., nodata=None, class_names=None)``."""
    return _write_tif


@pytest.fixture()
def write_nii() -> Callable[..., Path]:
    """``write_nii(path, labels3d, affine=diag(1, 2, 3, 1))`` (voxels 1 x 2 x 3 mm)."""
    return _write_nii
