"""End-to-end jobs on a real local Ray: exactness against MONAI, bad items, formats."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import zarr
from monai.inferers import sliding_window_inference

from geoseg_pipeline.api import predict, run_workflow
from geoseg_pipeline.spec import parse_workflow

pytestmark = pytest.mark.usefixtures("ray_local")


def _scene(rows: int, cols: int, bands: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 1000, (bands, rows, cols)).astype("uint16")
    data[:, : rows // 3, : cols // 4] = 0  # a nodata corner, larger than one window
    return data


def _monai(model_path: Path, x: np.ndarray, roi: int, overlap: float, blend: str) -> np.ndarray:
    model = torch.jit.load(str(model_path))
    with torch.no_grad():
        out = sliding_window_inference(
            torch.from_numpy(x)[None], (roi, roi), 4, model, overlap=overlap, mode=blend
        )
    return np.asarray(out[0].numpy())


def _workflow(tmp: Path, inputs: list[str], model: Path, **tiling: object) -> dict[str, object]:
    return {
        "inputs": {"paths": inputs},
        "model": {"type": "torchscript", "path": str(model)},
        "tiling": {"roi_size": 64, "overlap": 0.25, "blend": "gaussian", "batch_size": 4, "block_size": 128,
                   **tiling},
        "output": {"directory": str(tmp / "out"), "formats": ["cog", "logits"]},
        "resources": {"workers": 2},
    }


@pytest.mark.parametrize(("blend", "backend"), [("gaussian", "ray"), ("constant", "ray"), ("gaussian", "local")])
def test_blended_logits_equal_monai(
    tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path], blend: str, backend: str
) -> None:
    data = _scene(300, 410)
    src = write_raster("scene.tif", data, nodata=0)
    model = conv_model(in_channels=3, classes=4)
    mean, std = (500.0, 480.0, 520.0), (290.0, 300.0, 280.0)
    wf = _workflow(tmp_path, [str(src)], model, blend=blend)
    wf["preprocessing"] = {"normalize": {"mean": list(mean), "std": list(std)}}
    wf["resources"] = {"workers": 2, "backend": backend}
    result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert result.ok, result.outcomes
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["backend"] == backend

    x = (data.astype(np.float32) - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[
        :, None, None
    ]
    ref = _monai(model, x, 64, 0.25, blend)
    valid = (data != 0).any(axis=0)
    with rasterio.open(tmp_path / "out" / "scene" / "logits.tif") as ds:
        logits = ds.read()
    with rasterio.open(tmp_path / "out" / "scene" / "labels.tif") as ds:
        labels = ds.read(1)
        assert ds.crs.to_epsg() == 32633
        assert ds.transform == rasterio.open(src).transform
        assert ds.nodata == 255
    assert np.abs(logits[:, valid] - ref[:, valid]).max() < 1e-4
    agreement = (labels[valid] == ref.argmax(axis=0)[valid]).mean()
    assert agreement >= 0.9999
    assert (labels[~valid] == 255).all()
    assert np.isnan(logits[:, ~valid]).all()
    # windows that lie wholly in the nodata corner never reached the model
    doc = json.loads((tmp_path / "out" / "scene" / "stats.json").read_text())
    assert doc["windows_skipped_nodata"] > 0
    assert doc["valid_pixels"] == int(valid.sum())


class _Mirrored(torch.nn.Module):
    """nnU-Net's test-time mirroring around a model: the mean over every flip combination."""

    def __init__(self, net: torch.nn.Module, axes: tuple[int, ...]) -> None:
        super().__init__()
        self.net = net
        self.combos = [[2 + a for a in c] for n in range(len(axes) + 1) for c in itertools.combinations(axes, n)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [torch.flip(self.net(torch.flip(x, d)), d) if d else self.net(x) for d in self.combos]
        return torch.stack(outs).mean(0)


def test_mirroring_equals_monai_with_mirrored_model(
    tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path]
) -> None:
    data = np.random.default_rng(5).integers(1, 1000, (3, 150, 170)).astype("uint16")
    src = write_raster("scene.tif", data)
    model = conv_model(in_channels=3, classes=4)
    wf = _workflow(tmp_path, [str(src)], model)
    wf["inference"] = {"mirror_axes": [0, 1]}
    wf["preprocessing"] = {"normalize": {"mean": [500.0] * 3, "std": [290.0] * 3}}
    result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert result.ok, result.outcomes
    x = (data.astype(np.float32) - 500.0) / 290.0
    with torch.no_grad():
        ref = sliding_window_inference(torch.from_numpy(x)[None], (64, 64), 4,
                                       _Mirrored(torch.jit.load(str(model)), (0, 1)), overlap=0.25,
                                       mode="gaussian")[0].numpy()
        plain = sliding_window_inference(torch.from_numpy(x)[None], (64, 64), 4, torch.jit.load(str(model)),
                                         overlap=0.25, mode="gaussian")[0].numpy()
    with rasterio.open(tmp_path / "out" / "scene" / "logits.tif") as ds:
        logits = ds.read()
    assert np.abs(logits - ref).max() < 1e-4
    assert np.abs(logits - plain).max() > 1e-2  # mirroring changed the logits


def test_raster_smaller_than_roi_is_padded_like_monai(
    tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path]
) -> None:
    data = np.random.default_rng(3).integers(1, 255, (3, 20, 45)).astype("uint8")
    src = write_raster("tiny.tif", data)
    model = conv_model(in_channels=3, classes=2)
    result = run_workflow(parse_workflow(_workflow(tmp_path, [str(src)], model), tmp_path), progress=False)
    assert result.ok, result.outcomes
    ref = _monai(model, data.astype(np.float32), 64, 0.25, "gaussian")
    with rasterio.open(tmp_path / "out" / "tiny" / "logits.tif") as ds:
        assert np.abs(ds.read() - ref).max() < 1e-4


def test_bad_items_fail_alone_and_leave_nothing_half_written(
    tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path]
) -> None:
    good = write_raster("good.tif", _scene(200, 200))
    two_bands = write_raster("two_bands.tif", _scene(100, 100, bands=2))
    cplx = write_raster("complex.tif", np.ones((3, 40, 40), dtype="complex64"))
    nan = np.random.default_rng(1).random((3, 80, 80)).astype("float32")
    nan[1, 40, 41] = np.nan
    nan_tif = write_raster("nan.tif", nan)
    empty = write_raster("empty.tif", np.zeros((3, 90, 90), dtype="uint16"), nodata=0)
    not_raster = tmp_path / "notes.tif"
    not_raster.write_text("this is not a raster\n")
    big = write_raster("truncated.tif", _scene(512, 512, seed=5).astype("uint16"))
    raw = big.read_bytes()
    big.write_bytes(raw[: int(len(raw) * 0.6)])
    missing = tmp_path / "missing.tif"
    items = [good, two_bands, cplx, nan_tif, empty, not_raster, big, missing]

    model = conv_model(in_channels=3, classes=3)
    wf = _workflow(tmp_path, [str(p) for p in items], model)
    result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    by_item = {o.item: o for o in result.outcomes}
    assert not result.ok
    assert by_item["good"].status == "ok"
    expected = {
        "two_bands": "takes 3 input channel(s) but the raster gives 2 band(s)",
        "complex": "unsupported pixel type complex64",
        "nan": "NaN or infinite",
        "empty": "every pixel is nodata",
        "notes": "cannot open as a raster",
        "truncated": "truncated.tif",
        "missing": "no such file",
    }
    for name, fragment in expected.items():
        outcome = by_item[name]
        assert outcome.status == "failed", name
        assert fragment in outcome.error, (name, outcome.error)
        assert not (tmp_path / "out" / name / "labels.tif").exists(), name
    out = tmp_path / "out"
    assert not list(out.rglob(".staging-*")), "staging folders left behind"
    summary = (out / "summary.csv").read_text()
    for name in expected:
        assert f"{name},failed" in summary
    assert "good,ok" in summary


def test_zarr_item_equals_geotiff_item(
    tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path]
) -> None:
    data = _scene(150, 170)
    tif = write_raster("scene.tif", data, nodata=0)
    z = zarr.open_array(str(tmp_path / "scene_z.zarr"), mode="w", shape=data.shape, chunks=(3, 64, 64),
                        dtype=data.dtype)
    z[:] = data
    z.attrs.update({"crs": "EPSG:32633", "transform": [10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0], "nodata": 0})
    model = conv_model()
    wf = _workflow(tmp_path, [str(tif), str(tmp_path / "scene_z.zarr")], model)
    result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert result.ok, result.outcomes
    with rasterio.open(tmp_path / "out/scene/labels.tif") as a, rasterio.open(tmp_path / "out/scene_z/labels.tif") as b:
        assert np.array_equal(a.read(), b.read())
        assert a.crs == b.crs and a.transform == b.transform


def test_geographic_areas_are_geodesic(tmp_path: Path, write_raster: Callable[..., Path]) -> None:
    from pyproj import Geod
    from rasterio.transform import from_origin

    class Threshold(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([0.5 - x, x - 0.5], dim=1)

    model = tmp_path / "threshold.pt"
    torch.jit.script(Threshold()).save(str(model))
    data = np.zeros((1, 60, 90), dtype="uint8")
    data[0, 10:50, 20:70] = 1
    src = write_raster("geo.tif", data, crs="EPSG:4326", transform=from_origin(-10, 70, 0.5, 0.5))
    result = predict([src], str(model), tmp_path / "out", roi_size=32, classes=["other", "target"],
                     workers=1, progress=False)
    assert result.ok, result.outcomes
    stats = result.outcomes[0].stats
    assert stats is not None
    geod = Geod(ellps="WGS84")
    row_area = []
    for r in range(60):
        top, bottom = 70 - r * 0.5, 70 - (r + 1) * 0.5
        area, _ = geod.polygon_area_perimeter([-10, -9.5, -9.5, -10], [top, top, bottom, bottom])
        row_area.append(abs(area))
    expected = sum(row_area[10:50]) * 50
    total = sum(row_area) * 90
    assert stats.classes[1].pixels == 40 * 50
    assert stats.classes[1].area_m2 == pytest.approx(expected, rel=1e-9)
    assert stats.classes[1].area_ha == pytest.approx(expected / 1e4, rel=1e-9)
    assert stats.classes[1].share == pytest.approx(expected / total, rel=1e-9)
    assert stats.classes[1].share != pytest.approx(2000 / 5400, rel=1e-3)  # not a pixel share


def test_model_that_cannot_load_fails_every_item_with_the_real_reason(
    tmp_path: Path, write_raster: Callable[..., Path]
) -> None:
    src = write_raster("scene.tif", np.ones((3, 40, 40), "uint8"))
    bogus = tmp_path / "bogus.pt"
    bogus.write_text("not a model")
    result = predict([src], str(bogus), tmp_path / "out", roi_size=32, workers=1, progress=False)
    assert not result.ok
    error = result.outcomes[0].error
    assert "not a TorchScript model" in error and str(bogus) in error, error
    assert "actor died" not in error and "\x1b[" not in error


def test_a_nodata_value_the_pixels_cannot_hold_is_warned_about(
    tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """inputs.nodata: 70000 on uint16 pixels marks no pixel: said, not silently ignored."""
    scene = write_raster("scene.tif", np.random.default_rng(2).integers(1, 200, (3, 40, 50)).astype("uint16"))
    spec = parse_workflow({
        "inputs": {"paths": [str(scene)], "nodata": 70000},
        "model": {"type": "torchscript", "path": str(conv_model(in_channels=3, classes=3))},
        "tiling": {"roi_size": 32}, "output": {"directory": str(tmp_path / "out")},
        "resources": {"backend": "local", "workers": 1},
    }, tmp_path)
    with caplog.at_level("WARNING", logger="geoseg"):
        assert run_workflow(spec, progress=False).ok
    assert any("inputs.nodata 70000 cannot occur in its uint16 pixels: no pixel is nodata" in r.getMessage()
               for r in caplog.records)
