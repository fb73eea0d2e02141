"""Real images from tests/data/real (see its README for origin, licence and what independent tools measured)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geoseg_pipeline.api import predict

# the samples ship with the tests; GEOSEG_REAL_DATA (when set and non-empty) points elsewhere
REAL_DATA = Path(os.environ.get("GEOSEG_REAL_DATA") or Path(__file__).resolve().parent / "data" / "real")

pytestmark = pytest.mark.usefixtures("ray_local")


def _need(name: str) -> Path:
    path = REAL_DATA / name
    if not path.exists():
        pytest.fail(
            f"real sample {path} is missing: it ships in tests/data/real "
            "(or GEOSEG_REAL_DATA points at a folder without it)"
        )
    return path


class _Threshold(torch.nn.Module):
    """Class 1 where the first band is > 0.5: a model whose answer is known exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = x[:, :1]
        return torch.cat([0.5 - first, first - 0.5], dim=1)


@pytest.fixture()
def threshold_model(tmp_path: Path) -> Path:
    path = tmp_path / "threshold.pt"
    torch.jit.script(_Threshold()).save(str(path))
    return path


def test_world_geodesic_share(tmp_path: Path, threshold_model: Path) -> None:
    result = predict([_need("world.byte.tif")], str(threshold_model), tmp_path / "out", roi_size=256,
                     workers=2, progress=False)
    assert result.ok, result.outcomes
    stats = result.outcomes[0].stats
    assert stats is not None
    assert stats.classes[1].pixels == 1_033_658
    # README: 138,669,865 km² of 492,537,212 km² (WGS84), 28.15 % of the area, 29.91 % of pixels
    assert stats.classes[1].area_m2 == pytest.approx(138_669_865e6, rel=1e-8)
    assert stats.valid_area_m2 == pytest.approx(492_537_212e6, rel=1e-8)
    assert stats.classes[1].share == pytest.approx(0.2815, abs=5e-5)
    with rasterio.open(tmp_path / "out/world.byte/labels.tif") as ds, rasterio.open(_need("world.byte.tif")) as src:
        assert ds.crs == src.crs and ds.transform == src.transform
        assert np.array_equal(ds.read(1), (src.read(1) > 0.5).astype("uint8"))


def test_rgb_nodata_and_projected_area(tmp_path: Path, threshold_model: Path) -> None:
    result = predict([_need("RGB.byte.tif")], str(threshold_model), tmp_path / "out", roi_size=128,
                     workers=2, progress=False)
    assert result.ok, result.outcomes
    doc = json.loads((tmp_path / "out/RGB.byte/stats.json").read_text())
    assert doc["valid_pixels"] == 383_115  # GDAL's dataset mask: valid where any band is
    with rasterio.open(_need("RGB.byte.tif")) as src:
        t = src.transform
        pixel = abs(t.a * t.e - t.b * t.d)
    assert doc["valid_area_m2"] == pytest.approx(383_115 * pixel, rel=1e-12)


def test_rotated_transform_carried_unchanged_without_crs(tmp_path: Path, threshold_model: Path) -> None:
    result = predict([_need("rotated.tif")], str(threshold_model), tmp_path / "out", roi_size=32,
                     workers=1, progress=False)
    assert result.ok, result.outcomes
    with rasterio.open(tmp_path / "out/rotated/labels.tif") as ds, rasterio.open(_need("rotated.tif")) as src:
        assert ds.transform == src.transform
        assert ds.crs is None
    doc = json.loads((tmp_path / "out/rotated/stats.json").read_text())
    assert doc["area_method"] == "none" and "no CRS" in doc["area_note"]
    assert doc["classes"][1]["area_m2"] is None and doc["valid_pixels"] == 150


def test_nan_nodata_raster_smaller_than_a_window(tmp_path: Path, threshold_model: Path) -> None:
    result = predict([_need("float_nan.tif")], str(threshold_model), tmp_path / "out", roi_size=64,
                     workers=1, progress=False)
    assert result.ok, result.outcomes
    with rasterio.open(tmp_path / "out/float_nan/labels.tif") as ds:
        labels = ds.read(1)
    assert labels.tolist() == [[1, 1, 255], [0, 0, 0]]


def test_all_nodata_raster_is_a_clear_failure(tmp_path: Path, threshold_model: Path) -> None:
    result = predict([_need("all-nodata.tif")], str(threshold_model), tmp_path / "out", roi_size=64,
                     workers=2, progress=False)
    outcome = result.outcomes[0]
    assert outcome.status == "failed" and "every pixel is nodata" in outcome.error
    assert not (tmp_path / "out/all-nodata/labels.tif").exists()


def test_mr_label_volume_and_lesions_through_the_volume_path(tmp_path: Path, threshold_model: Path) -> None:
    import nibabel as nib

    src = _need("brain1_label.nii.gz")
    result = predict([src], str(threshold_model), tmp_path / "out", roi_size=[96, 96, 16], workers=2,
                     lesion_classes=[1], progress=False)
    assert result.ok, result.outcomes
    doc = json.loads((tmp_path / "out/brain1_label/stats.json").read_text())
    # README (pyradiomics VoxelVolume): 4,137 voxels = 16,412.66 mm3, 2 connected components
    assert doc["classes"][1]["pixels"] == 4137
    assert doc["classes"][1]["volume_ml"] * 1000 == pytest.approx(16412.66, abs=0.01)
    assert doc["lesion_count"] == 2
    assert doc["axcodes"] == "LAS"
    out, ref = nib.load(tmp_path / "out/brain1_label/labels.nii.gz"), nib.load(src)
    assert np.allclose(out.affine, ref.affine) and out.shape == ref.shape
    assert np.array_equal(np.asarray(out.dataobj), (np.asarray(ref.dataobj) > 0.5).astype("uint8"))
