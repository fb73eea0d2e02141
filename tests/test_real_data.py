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


def test_a_stac_item_of_real_landsat_bands_at_two_resolutions(tmp_path: Path) -> None:
    """Real Landsat 7 pixels (RGB.byte.tif, its real nodata footprint) split into a STAC item:
    red and green as 300 m assets, blue averaged by GDAL to 600 m, and a QA_PIXEL-style band
    (bit 0 fill from GDAL's dataset mask, bit 3 "cloud" on the brightest real pixels) at 300 m.
    Segmented through the engine, it equals an independent assembly: blue warped back whole by
    GDAL (bilinear), the flagged pixels set to nodata, run through MONAI's
    ``sliding_window_inference``."""
    from monai.inferers import sliding_window_inference
    from rasterio.warp import Resampling, reproject
    from stac_files import Band, write_catalog, write_item

    from geoseg_pipeline.api import run_workflow
    from geoseg_pipeline.spec import parse_workflow

    with rasterio.open(_need("RGB.byte.tif")) as src:
        rgb, t300, crs, footprint = src.read(), src.transform, src.crs.to_string(), src.dataset_mask() > 0
    rows, cols = rgb.shape[1:]
    t600 = t300 * t300.scale(2)
    blue = np.zeros((1, (rows + 1) // 2, (cols + 1) // 2), np.uint8)
    reproject(rgb[2], blue[0], src_transform=t300, src_crs=crs, dst_transform=t600, dst_crs=crs,
              resampling=Resampling.average, src_nodata=0, dst_nodata=0)
    qa = (~footprint).astype(np.uint16) | ((rgb[0] >= 213).astype(np.uint16) << 3)
    assert 0.02 < (qa & 8).astype(bool).mean() < 0.1  # the bright pixels: a few per cent of the scene
    item = write_item(tmp_path / "cat", "LE07_real", {
        "red": Band(rgb[:1], t300, crs), "green": Band(rgb[1:2], t300, crs), "blue": Band(blue, t600, crs),
        "QA_PIXEL": Band(qa[None], t300, crs, nodata=None)})
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 4, 3, padding=1)).eval()
    model = tmp_path / "net.pt"
    torch.jit.script(net).save(str(model))
    spec = parse_workflow({
        "inputs": {"stac": {"catalog": str(write_catalog(tmp_path / "cat", [item])),
                            "assets": ["red", "green", "blue"]},
                   "mask": {"asset": "QA_PIXEL", "bits": [0, 3]}},
        "model": {"type": "torchscript", "path": str(model)},
        "tiling": {"roi_size": 96, "overlap": 0.25, "blend": "gaussian", "batch_size": 4, "block_size": 192},
        "preprocessing": {"normalize": {"mean": [40.0, 40.0, 40.0], "std": [30.0, 30.0, 30.0]}},
        "output": {"directory": str(tmp_path / "out"), "formats": ["cog", "logits"]},
        "resources": {"workers": 2, "backend": "local"},
    }, tmp_path)
    result = run_workflow(spec, progress=False)
    assert result.ok, result.outcomes

    stack = rgb.astype(np.float32)
    warped = np.zeros((rows, cols), np.uint8)
    reproject(blue[0], warped, src_transform=t600, src_crs=crs, dst_transform=t300, dst_crs=crs,
              resampling=Resampling.bilinear, src_nodata=0, dst_nodata=0)
    stack[2] = warped
    flagged = (qa & 0b1001) != 0
    stack[:, flagged] = 0
    valid = ~flagged & (stack != 0).any(axis=0)
    x = (stack - 40.0) / 30.0
    with torch.no_grad():
        ref = sliding_window_inference(torch.from_numpy(x)[None], (96, 96), 4, net, overlap=0.25,
                                       mode="gaussian")[0].numpy()
    with rasterio.open(tmp_path / "out" / "LE07_real" / "logits.tif") as ds:
        logits = ds.read()
    with rasterio.open(tmp_path / "out" / "LE07_real" / "labels.tif") as ds:
        labels, grid = ds.read(1), (ds.transform, ds.crs.to_string())
    assert grid == (t300, crs)
    assert valid.sum() > 300_000  # most of the real footprint (383,115 pixels) stays
    assert np.abs(logits - ref)[:, valid].max() < 1e-4
    np.testing.assert_array_equal(labels[valid], ref.argmax(0)[valid])
    assert (labels[~valid] == 255).all()
