"""STAC jobs end to end: a catalog of items whose bands are separate files at 10 m and 20 m with
a scene-classification band, segmented through the engine and compared with an independent
assembly of the same stack (each band warped whole with GDAL, the mask applied) run through
MONAI's ``sliding_window_inference``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import torch
from affine import Affine
from monai.inferers import sliding_window_inference
from rasterio.warp import Resampling, reproject
from stac_files import Band, ramp, write_catalog, write_item
from stac_schemas import assert_valid

from geoseg_pipeline.api import run_workflow
from geoseg_pipeline.errors import SpecError
from geoseg_pipeline.spec import parse_workflow

T10 = Affine(10, 0, 500000, 0, -10, 5200000)
T20 = Affine(20, 0, 500000, 0, -20, 5200000)
H, W = 150, 170
SCL_INVALID = [0, 3, 8, 9]


def _scl(seed: int) -> np.ndarray:
    scl = np.full((1, (H + 1) // 2, (W + 1) // 2), 4, np.uint8)
    rng = np.random.default_rng(seed)
    r, c = rng.integers(5, 50, 2)
    scl[0, r:r + 20, c:c + 25] = 9  # a cloud
    scl[0, r + 20:r + 26, c:c + 25] = 3  # its shadow
    scl[0, :, :4] = 0  # no data along the west edge
    return scl


def _item(folder: Path, item_id: str, seed: int, crs: str = "EPSG:32633", **props: Any) -> Path:
    bands = {
        "B02": Band(ramp((1, H, W), seed=seed), T10, crs),
        "B04": Band(ramp((1, H, W), seed=seed + 1, start=100), T10, crs),
        "B11": Band(ramp((1, (H + 1) // 2, (W + 1) // 2), seed=seed + 2, start=500), T20, crs),
        "SCL": Band(_scl(seed), T20, crs, nodata=None),
    }
    return write_item(folder, item_id, bands, {"eo:cloud_cover": 12.5, **props})


def _assembled(item_json: Path) -> tuple[np.ndarray, np.ndarray]:
    """The item's stack on the 10 m grid built independently: each band warped whole with GDAL
    (bilinear for B11, nearest for SCL), masked pixels set to 0 (nodata); and the valid mask."""
    folder = item_json.parent
    out = np.zeros((3, H, W), np.uint16)
    for i, key in enumerate(("B02", "B04", "B11")):
        with rasterio.open(folder / f"{key}.tif") as ds:
            reproject(ds.read(1), out[i], src_transform=ds.transform, src_crs=ds.crs, dst_transform=T10,
                      dst_crs=ds.crs, resampling=Resampling.bilinear, src_nodata=0, dst_nodata=0)
    scl = np.zeros((H, W), np.uint8)
    with rasterio.open(folder / "SCL.tif") as ds:
        reproject(ds.read(1), scl, src_transform=ds.transform, src_crs=ds.crs, dst_transform=T10, dst_crs=ds.crs,
                  resampling=Resampling.nearest)
    invalid = np.isin(scl, SCL_INVALID)
    out[:, invalid] = 0
    return out, ~invalid & (out != 0).any(axis=0)


def _workflow(tmp: Path, catalog: Path, model: Path, **stac: Any) -> dict[str, Any]:
    return {
        "inputs": {"stac": {"catalog": str(catalog), "assets": ["B02", "B04", "B11"], **stac},
                   "mask": {"asset": "SCL", "invalid": SCL_INVALID}},
        "model": {"type": "torchscript", "path": str(model)},
        "tiling": {"roi_size": 64, "overlap": 0.25, "blend": "gaussian", "batch_size": 4, "block_size": 128},
        "preprocessing": {"normalize": {"mean": [500.0, 600.0, 900.0], "std": [300.0, 300.0, 300.0]}},
        "output": {"directory": str(tmp / "out"), "formats": ["cog", "logits"]},
        "resources": {"workers": 2, "backend": "local"},
    }


def _monai(model: Path, stack: np.ndarray) -> np.ndarray:
    x = (stack.astype(np.float32) - np.array([500.0, 600.0, 900.0], np.float32)[:, None, None]) / np.float32(300.0)
    with torch.no_grad():
        out = sliding_window_inference(torch.from_numpy(x)[None], (64, 64), 4, torch.jit.load(str(model)),
                                       overlap=0.25, mode="gaussian")
    return np.asarray(out[0].numpy())


def test_stac_catalog_equals_gdal_assembly_through_monai(tmp_path: Path, conv_model: Callable[..., Path]) -> None:
    items = [_item(tmp_path / "cat", "S2_A", 1), _item(tmp_path / "cat", "S2_B", 7)]
    catalog = write_catalog(tmp_path / "cat", items)
    model = conv_model(in_channels=3, classes=4)
    result = run_workflow(parse_workflow(_workflow(tmp_path, catalog, model), tmp_path), progress=False)
    assert result.ok, result.outcomes
    for item in items:
        stack, valid = _assembled(item)
        ref = _monai(model, stack)
        out = tmp_path / "out" / item.stem
        with rasterio.open(out / "logits.tif") as ds:
            logits = ds.read()
        with rasterio.open(out / "labels.tif") as ds:
            labels, grid = ds.read(1), (ds.transform, ds.crs)
        assert grid == (T10, rasterio.crs.CRS.from_epsg(32633))
        # MONAI blends the masked pixels' zeros too: compare where the pixel is valid
        assert np.abs(logits - ref)[:, valid].max() < 1e-4
        assert (labels == 255).sum() == (~valid).sum()
        assert np.array_equal(labels[valid], ref.argmax(0)[valid])
        summary = json.loads((out / "stats.json").read_text(encoding="utf-8"))
        assert summary["nodata_pixels"] == int((~valid).sum())
        # the label map described as STAC, derived from its source item
        doc = assert_valid(out / "item.json")
        assert doc["id"] == item.stem and doc["properties"]["datetime"] == "2024-06-01T10:00:00Z"
        assert {"rel": "derived_from", "href": str(item)}.items() <= next(
            link for link in doc["links"] if link["rel"] == "derived_from").items()
        assert doc["assets"]["labels"]["href"] == "./labels.tif"
        assert pystac.Item.from_file(str(out / "item.json")).id == item.stem
    collection = assert_valid(tmp_path / "out" / "collection.json")
    assert sorted(link["href"] for link in collection["links"] if link["rel"] == "item") == [
        "./S2_A/item.json", "./S2_B/item.json"]
    assert [i.id for i in pystac.Collection.from_file(str(tmp_path / "out" / "collection.json")).get_items()] \
        == ["S2_A", "S2_B"]


def test_items_in_different_crss_stay_in_their_own(tmp_path: Path, conv_model: Callable[..., Path]) -> None:
    items = [_item(tmp_path / "cat", "zone33", 1), _item(tmp_path / "cat", "zone32", 2, crs="EPSG:32632")]
    catalog = write_catalog(tmp_path / "cat", items)
    model = conv_model(in_channels=3, classes=4)
    result = run_workflow(parse_workflow(_workflow(tmp_path, catalog, model), tmp_path), progress=False)
    assert result.ok, result.outcomes
    for name, epsg in (("zone33", 32633), ("zone32", 32632)):
        with rasterio.open(tmp_path / "out" / name / "labels.tif") as ds:
            assert ds.crs == rasterio.crs.CRS.from_epsg(epsg) and ds.transform == T10
    bbox = assert_valid(tmp_path / "out" / "collection.json")["extent"]["spatial"]["bbox"][0]
    assert bbox[0] < 10.0 < 14.0 < bbox[2]  # both zones' footprints (UTM 32N and 33N at 500 km east)


def test_bad_items_fail_alone(tmp_path: Path, conv_model: Callable[..., Path]) -> None:
    good = _item(tmp_path / "cat", "good", 1)
    no_b11 = _item(tmp_path / "cat", "no_b11", 2)
    doc = json.loads(no_b11.read_text(encoding="utf-8"))
    del doc["assets"]["B11"]
    no_b11.write_text(json.dumps(doc), encoding="utf-8")
    broken = _item(tmp_path / "cat", "broken_asset", 3)
    (broken.parent / "B04.tif").write_bytes(b"not a tiff")
    small_mask = _item(tmp_path / "cat", "small_mask", 4)
    with rasterio.open(small_mask.parent / "SCL.tif") as ds:
        profile, scl = ds.profile, ds.read()
    profile.update(width=40, height=30)
    with rasterio.open(small_mask.parent / "SCL.tif", "w", **profile) as ds:
        ds.write(scl[:, :30, :40])
    catalog = write_catalog(tmp_path / "cat", [good, no_b11, broken, small_mask], extra_links=["./gone/gone.json"])
    model = conv_model(in_channels=3, classes=4)
    result = run_workflow(parse_workflow(_workflow(tmp_path, catalog, model), tmp_path), progress=False)
    status = {o.item: (o.status, o.error) for o in result.outcomes}
    assert status["good"][0] == "ok"
    assert status["no_b11"][0] == "failed" and "has no asset 'B11'" in status["no_b11"][1]
    assert status["broken_asset"][0] == "failed" and "asset 'B04'" in status["broken_asset"][1]
    assert status["small_mask"][0] == "failed" and "mask asset 'SCL'" in status["small_mask"][1] \
        and "does not cover the output grid" in status["small_mask"][1]
    assert status["gone"][0] == "failed" and "broken item link" in status["gone"][1]
    for name in ("no_b11", "broken_asset", "small_mask", "gone"):
        assert not (tmp_path / "out" / name / "labels.tif").exists()


def test_filters_and_nightly_reruns(tmp_path: Path, conv_model: Callable[..., Path]) -> None:
    june = _item(tmp_path / "cat", "june", 1)
    july = _item(tmp_path / "cat", "july", 2, datetime="2024-07-03T10:00:00Z")
    cloudy = _item(tmp_path / "cat", "cloudy", 3, **{"eo:cloud_cover": 80.0})
    catalog = write_catalog(tmp_path / "cat", [june, july, cloudy])
    model = conv_model(in_channels=3, classes=4)
    wf = _workflow(tmp_path, catalog, model, datetime="2024-06-01/2024-07-31", max_cloud_cover=20)
    first = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert sorted((o.item, o.status) for o in first.outcomes) == [("july", "ok"), ("june", "ok")]
    # a night later: nothing changed, then the July red band is reprocessed upstream
    again = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert sorted((o.item, o.status) for o in again.outcomes) == [("july", "skipped"), ("june", "skipped")]
    with rasterio.open(july.parent / "B04.tif", "r+") as ds:
        ds.write(ds.read() + 1)
    third = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert sorted((o.item, o.status) for o in third.outcomes) == [("july", "ok"), ("june", "skipped")]
    # the collection still lists the item finished by an earlier run
    collection = assert_valid(tmp_path / "out" / "collection.json")
    assert sorted(link["href"] for link in collection["links"] if link["rel"] == "item") == [
        "./july/item.json", "./june/item.json"]
    # a filter that keeps nothing is an error naming the catalog and the filter
    wf["inputs"]["stac"]["datetime"] = "2030-01-01/.."
    with pytest.raises(Exception, match=r"none of its 3 item\(s\) passes the filters \(datetime 2030-01-01/\.\."):
        run_workflow(parse_workflow(wf, tmp_path), progress=False)


def test_predict_command_on_an_item(tmp_path: Path, conv_model: Callable[..., Path]) -> None:
    from geoseg_pipeline.cli import main

    item = _item(tmp_path / "cat", "S2_C", 5)
    model = conv_model(in_channels=3, classes=4)
    out = tmp_path / "cli"
    assert main(["--no-progress", "predict", str(item), "--assets", "B02,B04,B11", "--mask", "SCL:0,3,8,9",
                 "--model", str(model), "--out", str(out), "--roi-size", "64", "--block-size", "128"]) == 0
    _, valid = _assembled(item)
    with rasterio.open(out / "S2_C" / "labels.tif") as ds:
        labels = ds.read(1)
    assert np.array_equal(labels == 255, ~valid)
    assert main(["predict", str(item), "--mask", "SCL:bits=x", "--assets", "B02", "--model", str(model),
                 "--out", str(out)]) == 2
    assert main(["predict", str(item), "--mask", "SCL:9", "--model", str(model), "--out", str(out)]) == 2


def test_stac_outputs_for_plain_files_when_asked(tmp_path: Path, write_raster: Callable[..., Path],
                                                 conv_model: Callable[..., Path]) -> None:
    scene = write_raster("scene.tif", ramp((3, 90, 110)), nodata=0)
    model = conv_model(in_channels=3, classes=4)
    wf: dict[str, Any] = {"inputs": {"paths": [str(scene)]}, "model": {"type": "torchscript", "path": str(model)},
                          "tiling": {"roi_size": 64}, "output": {"directory": str(tmp_path / "plain")}}
    assert run_workflow(parse_workflow(wf, tmp_path), progress=False).ok
    assert not (tmp_path / "plain" / "scene" / "item.json").exists()  # not asked, not STAC inputs
    assert not (tmp_path / "plain" / "collection.json").exists()
    wf["output"] = {"directory": str(tmp_path / "described"), "stac": True}
    assert run_workflow(parse_workflow(wf, tmp_path), progress=False).ok
    doc = assert_valid(tmp_path / "described" / "scene" / "item.json")
    derived = [link["href"] for link in doc["links"] if link["rel"] == "derived_from"]
    assert derived == [str(scene)]
    assert_valid(tmp_path / "described" / "collection.json")
    wf["tiling"] = {"roi_size": [16, 16, 16]}
    with pytest.raises(SpecError, match=r"output\.stac: applies to rasters only"):
        parse_workflow(wf, tmp_path)


BUCKET = "stac-jobs"


@pytest.mark.usefixtures("clean_aws_environment")
def test_catalog_and_assets_on_s3(tmp_path: Path, s3_env: Any, conv_model: Callable[..., Path]) -> None:
    from geoseg_pipeline.cli import main

    item = _item(tmp_path / "cat", "S2_S3", 3)
    write_catalog(tmp_path / "cat", [item])
    for file in (tmp_path / "cat").rglob("*"):
        if file.is_file():
            s3_env.upload_file(str(file), BUCKET, f"archive/{file.relative_to(tmp_path / 'cat')}")
    model = conv_model(in_channels=3, classes=4)
    wf = _workflow(tmp_path, tmp_path / "unused", model)
    wf["inputs"]["stac"]["catalog"] = f"s3://{BUCKET}/archive/catalog.json"
    result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert result.ok, result.outcomes
    _, valid = _assembled(item)
    with rasterio.open(tmp_path / "out" / "S2_S3" / "labels.tif") as ds:
        assert np.array_equal(ds.read(1) == 255, ~valid)
    workflow = tmp_path / "s3.yaml"
    workflow.write_text(json.dumps(wf), encoding="utf-8")
    assert main(["validate", str(workflow)]) == 0
