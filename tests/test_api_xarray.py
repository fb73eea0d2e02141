"""xarray datacubes through the engine (local backend): predict_dataarray and format: xarray-zarr
give the labels and logits the file path gives, and MONAI's sliding_window_inference's logits;
dask-backed arrays are read chunk by chunk, never whole; coordinates and CRS come back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import dask.array
import numpy as np
import pytest
import rasterio
import rioxarray
import torch
import xarray as xr
from dask_counts import ChunksPerCompute
from monai.inferers import sliding_window_inference
from pyproj import CRS

from geoseg_pipeline import predict_dataarray
from geoseg_pipeline.api import predict, run_workflow
from geoseg_pipeline.cli import main
from geoseg_pipeline.errors import InputDataError, JobError, SpecError
from geoseg_pipeline.ledger import config_hash
from geoseg_pipeline.sources.xarray_source import live_dataarray
from geoseg_pipeline.spec import parse_workflow

TILING: dict[str, Any] = {"roi_size": 64, "overlap": 0.25, "blend": "gaussian", "batch_size": 4, "block_size": 128}


def _scene(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    data = np.random.default_rng(seed).integers(1, 1000, (3, rows, cols)).astype("uint16")
    data[:, : rows // 3, : cols // 4] = 0  # a nodata corner, larger than one window
    return data


def _monai(model: Path, data: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = sliding_window_inference(torch.from_numpy(data.astype(np.float32))[None], (64, 64), 4,
                                       torch.jit.load(str(model)), overlap=0.25, mode="gaussian")
    return np.asarray(out[0].numpy())


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return np.asarray(ds.read())


@pytest.mark.parametrize("backing", ["numpy", "dask"])
def test_dataarray_equals_the_file_path_and_monai(
    tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path], backing: str
) -> None:
    data = _scene(300, 410)
    tif = write_raster("scene.tif", data, nodata=0)
    model = conv_model(in_channels=3, classes=4)
    files = predict([tif], str(model), tmp_path / "files", formats=["cog", "logits"], workers=2, **TILING)
    assert files.ok, files.outcomes
    da = rioxarray.open_rasterio(tif, chunks={"band": -1, "y": 100, "x": 128} if backing == "dask" else None)
    assert (da.chunks is not None) == (backing == "dask")
    labels = predict_dataarray(da, str(model), tmp_path / "arrays", formats=["cog", "logits"], workers=2,
                               name="scene", **TILING)

    expected = _read(tmp_path / "files" / "scene" / "labels.tif")[0]
    np.testing.assert_array_equal(labels.values, expected)
    logits = _read(tmp_path / "arrays" / "scene" / "logits.tif")
    np.testing.assert_array_equal(logits, _read(tmp_path / "files" / "scene" / "logits.tif"))
    valid = (data != 0).any(axis=0)
    assert np.abs(logits[:, valid] - _monai(model, data)[:, valid]).max() < 1e-4
    assert (labels.values[~valid] == 255).all()

    assert labels.dims == ("y", "x") and labels.name == "labels"
    np.testing.assert_array_equal(labels.x.values, da.x.values)
    np.testing.assert_array_equal(labels.y.values, da.y.values)
    assert labels.rio.crs == da.rio.crs and labels.rio.crs.to_epsg() == 32633
    assert labels.rio.transform() == da.rio.transform()
    assert labels.attrs["nodata"] == 255 and labels.rio.nodata == 255
    assert labels.chunks is not None  # opened lazily from the COG
    stats = json.loads((tmp_path / "files" / "scene" / "stats.json").read_text())
    assert labels.attrs["statistics"]["valid_pixels"] == stats["valid_pixels"] == int(valid.sum())
    assert labels.attrs["statistics"]["classes"] == stats["classes"]
    assert labels.attrs["statistics"]["source"] == "DataArray 'scene'"
    assert labels.attrs["output"] == str((tmp_path / "arrays" / "scene" / "labels.tif").resolve())


def test_a_dask_array_is_read_chunk_by_chunk_never_whole(tmp_path: Path, conv_model: Callable[..., Path]) -> None:
    rows, cols = 400, 430
    data = _scene(rows, cols, seed=3)
    ran: list[tuple[int, ...]] = []
    per_compute = ChunksPerCompute()

    def chunk(block_info: Any = None) -> np.ndarray:
        (b, r, c) = block_info[None]["array-location"]
        ran.append(tuple(block_info[None]["chunk-location"]))
        per_compute.ran()
        return data[b[0]:b[1], r[0]:r[1], c[0]:c[1]]

    lazy = dask.array.map_blocks(chunk, chunks=((3,), (50,) * 8, (50,) * 8 + (30,)), dtype=data.dtype,
                                 name="scene-chunks", meta=np.empty((0, 0, 0), data.dtype))
    ys, xs = 50.0 - 0.125 * (np.arange(rows) + 0.5), 10.0 + 0.25 * (np.arange(cols) + 0.5)
    da = xr.DataArray(lazy, dims=("band", "y", "x"), coords={"y": ys, "x": xs, "band": [4, 3, 2]})
    da = da.rio.write_crs("EPSG:4326").rio.write_nodata(0)
    model = conv_model(in_channels=3, classes=4)
    with per_compute:
        labels = predict_dataarray(da, str(model), tmp_path / "out", workers=2, name="cube", **TILING)
    # every read needs the chunks under one task region (a 128-pixel block and a window's margin,
    # at most 5 x 5 chunks of 50), never the whole array's 8 x 9
    assert per_compute.counts and max(per_compute.counts) <= 25
    assert set(ran) == {(0, r, c) for r in range(8) for c in range(9)}
    assert len(ran) == sum(per_compute.counts)  # every chunk read is one of those computations
    ref = _monai(model, data).argmax(axis=0)
    valid = (data != 0).any(axis=0)
    assert (labels.values[valid] == ref[valid]).mean() >= 0.9999
    np.testing.assert_array_equal(labels.y.values, ys)
    np.testing.assert_array_equal(labels.x.values, xs)
    assert CRS.from_user_input(labels.rio.crs) == CRS.from_epsg(4326)


def test_a_cube_on_zarr_equals_the_file_path(
    tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path]
) -> None:
    data = _scene(200, 230, seed=7)
    tif = write_raster("scene.tif", data, nodata=0)
    model = conv_model(in_channels=3, classes=4)
    files = predict([tif], str(model), tmp_path / "files", formats=["cog", "logits"], workers=2, **TILING)
    assert files.ok, files.outcomes
    da = rioxarray.open_rasterio(tif)
    names = ["B04", "B03", "B02"]  # the model's order; the cube lists them by name
    cube = xr.Dataset({n: da.isel(band=i, drop=True).rio.write_nodata(0) for i, n in enumerate(names)})
    cube.chunk({"y": 64, "x": 64}).to_zarr(tmp_path / "cube.zarr", consolidated=False)
    wf = {"inputs": {"paths": [str(tmp_path / "cube.zarr")], "format": "xarray-zarr", "variables": names},
          "model": {"type": "torchscript", "path": str(model)}, "tiling": TILING,
          "output": {"directory": str(tmp_path / "cubes"), "formats": ["cog", "logits"]},
          "resources": {"workers": 2, "backend": "local"}}
    result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert result.ok, result.outcomes
    for name in ("labels.tif", "logits.tif"):
        np.testing.assert_array_equal(_read(tmp_path / "cubes" / "cube" / name),
                                      _read(tmp_path / "files" / "scene" / name))
    with rasterio.open(tmp_path / "cubes" / "cube" / "labels.tif") as got, rasterio.open(tif) as src:
        assert got.crs == src.crs and got.transform == src.transform

    # the usual way in: open_zarr (dask; the _FillValue pixels become NaN in floats), to_dataarray
    # (which drops the _FillValue): NaN is the nodata of a float array
    opened = xr.open_zarr(tmp_path / "cube.zarr", chunks={}, consolidated=False)[names].to_dataarray("band")
    assert np.issubdtype(opened.dtype, np.floating) and opened.chunks is not None
    labels = predict_dataarray(opened, str(model), tmp_path / "opened", workers=2, **TILING)
    np.testing.assert_array_equal(labels.values, _read(tmp_path / "files" / "scene" / "labels.tif")[0])

    # the command line: geoseg predict CUBE --format xarray-zarr --variables ...
    assert main(["--no-progress", "predict", str(tmp_path / "cube.zarr"), "--format", "xarray-zarr",
                 "--variables", "B04,B03,B02", "--model", str(model), "--out", str(tmp_path / "cli"),
                 "--roi-size", "64", "--overlap", "0.25", "--blend", "gaussian", "--batch-size", "4",
                 "--block-size", "128", "--workers", "2"]) == 0
    np.testing.assert_array_equal(_read(tmp_path / "cli" / "cube" / "labels.tif"),
                                  _read(tmp_path / "files" / "scene" / "labels.tif"))

    # preprocessing.bands select among the named variables (1-based): B02, B03, B04 -> B04, B03, B02
    picked = {**wf, "inputs": {**wf["inputs"], "variables": ["B02", "B03", "B04"]},
              "preprocessing": {"bands": [3, 2, 1]}, "output": {**wf["output"], "directory": str(tmp_path / "picked")}}
    assert run_workflow(parse_workflow(picked, tmp_path), progress=False).ok
    np.testing.assert_array_equal(_read(tmp_path / "picked" / "cube" / "logits.tif"),
                                  _read(tmp_path / "files" / "scene" / "logits.tif"))

    wf["inputs"] = {**wf["inputs"], "variables": ["B04", "B08", "B02"]}
    wf["output"] = {**wf["output"], "directory": str(tmp_path / "missing")}
    result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert not result.ok
    assert "cube.zarr: inputs.variables names 'B08'" in result.outcomes[0].error
    assert "it has: B02, B03, B04" in result.outcomes[0].error


def test_variables_belong_to_xarray_zarr_and_change_the_config_hash(tmp_path: Path) -> None:
    base = {"inputs": {"paths": ["cube.zarr"], "format": "xarray-zarr"}, "model": {"type": "builtin",
                                                                                  "name": "landcover-demo"},
            "output": {"directory": str(tmp_path / "out")}}
    plain = parse_workflow(base, tmp_path)
    named = parse_workflow({**base, "inputs": {**base["inputs"], "variables": ["B04", "B03"]}}, tmp_path)
    swapped = parse_workflow({**base, "inputs": {**base["inputs"], "variables": ["B03", "B04"]}}, tmp_path)
    assert len({config_hash(plain), config_hash(named), config_hash(swapped)}) == 3
    with pytest.raises(SpecError, match=r"inputs\.variables names the bands of a Zarr datacube"):
        parse_workflow({**base, "inputs": {"paths": ["cube.zarr"], "variables": ["B04"]}}, tmp_path)


def test_no_crs_gives_labels_on_the_pixel_grid(tmp_path: Path, conv_model: Callable[..., Path]) -> None:
    data = _scene(90, 100, seed=2)
    da = xr.DataArray(data, dims=("band", "y", "x"), coords={"y": np.arange(90)[::-1] + 0.5,
                                                             "x": np.arange(100) + 0.5})
    labels = predict_dataarray(da, str(conv_model(in_channels=3, classes=3)), tmp_path / "out", nodata=0,
                               workers=1, **TILING)
    assert labels.rio.crs is None
    np.testing.assert_array_equal(labels.y.values, da.y.values)
    assert labels.shape == (90, 100)
    assert "no CRS" in labels.attrs["statistics"]["area_note"]
    valid = (data != 0).any(axis=0)
    assert (labels.values[~valid] == 255).all() and (labels.values[valid] < 3).all()


def test_the_records_name_the_dataarray_and_a_model_section_is_taken(
        tmp_path: Path, conv_model: Callable[..., Path]) -> None:
    """The handle file that stands for the array during the job is gone afterwards: the item's
    stats and the job's summaries name the DataArray as the caller knows it. From Python the
    model may be a path or a model section (a mapping) as well as --model's string."""
    da = xr.DataArray(_scene(80, 90, seed=3), dims=("band", "y", "x"),
                      coords={"y": np.arange(80)[::-1] + 0.5, "x": np.arange(90) + 0.5})
    model = {"type": "torchscript", "path": str(conv_model(in_channels=3, classes=3))}
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.csv").write_bytes("r\xe9sum\xe9;1\n".encode("latin-1"))  # the caller's own file: left alone
    predict_dataarray(da, model, out, name="forêt7", nodata=0, workers=1, **TILING)
    for path in (out / "summary.json", out / "summary.csv", out / "forêt7" / "stats.json"):
        text = path.read_text(encoding="utf-8")
        assert "geoseg-handle" not in text, path
    assert json.loads((out / "forêt7" / "stats.json").read_text(encoding="utf-8"))["source"] == "DataArray 'forêt7'"
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["items"][0]["source"] == "DataArray 'forêt7'"
    assert "DataArray 'forêt7'" in (out / "summary.csv").read_text(encoding="utf-8")
    assert (out / "notes.csv").read_bytes() == "r\xe9sum\xe9;1\n".encode("latin-1")
    with pytest.raises(TypeError, match="model: expected a path, a built-in model's name or a model section"):
        predict_dataarray(da, 7, tmp_path / "out2")  # type: ignore[arg-type]


def test_bad_input_is_refused_before_anything_runs(tmp_path: Path) -> None:
    cube = xr.DataArray(np.zeros((2, 3, 20, 20), np.uint8), dims=("time", "band", "y", "x"))
    with pytest.raises(InputDataError, match=r"\(band, y, x\).*select or stack"):
        predict_dataarray(cube, "landcover-demo", tmp_path / "out")
    with pytest.raises(InputDataError, match="transpose it"):
        predict_dataarray(cube.isel(time=0).transpose("band", "x", "y"), "landcover-demo", tmp_path / "out")
    with pytest.raises(InputDataError, match="got Dataset"):
        predict_dataarray(cube.isel(time=0).to_dataset(name="v"), "landcover-demo", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_failed_item_raises_with_its_reason(tmp_path: Path, conv_model: Callable[..., Path]) -> None:
    da = xr.DataArray(np.ones((2, 40, 40), np.uint8), dims=("band", "y", "x"))
    with pytest.raises(JobError, match=r"^predict_dataarray: DataArray 'dataarray': the model takes 3 input channel"):
        predict_dataarray(da, str(conv_model(in_channels=3, classes=2)), tmp_path / "out", **TILING)
    summary = (tmp_path / "out" / "summary.json").read_text(encoding="utf-8")  # failed, named as the caller knows it
    assert "geoseg-handle" not in summary and "DataArray 'dataarray'" in summary


def test_dask_is_left_as_configured(tmp_path: Path, conv_model: Callable[..., Path]) -> None:
    """The reads use the caller's dask scheduler (here: synchronous, as a user may set it)."""
    data = _scene(70, 80, seed=5)
    da = xr.DataArray(dask.array.from_array(data, chunks=(3, 32, 32)), dims=("band", "y", "x"),
                      coords={"y": np.arange(70)[::-1] + 0.5, "x": np.arange(80) + 0.5})
    with dask.config.set(scheduler="synchronous"):
        labels = predict_dataarray(da, str(conv_model(in_channels=3, classes=2)), tmp_path / "out", nodata=0,
                                   workers=1, **TILING)
    assert labels.shape == (70, 80)


@pytest.mark.usefixtures("ray_local")
def test_on_ray_a_cube_runs_and_a_live_array_is_refused(tmp_path: Path, conv_model: Callable[..., Path]) -> None:
    data = _scene(150, 170, seed=11)
    model = conv_model(in_channels=3, classes=3)
    da = xr.DataArray(data, dims=("band", "y", "x"), coords={"y": 5200000.0 - 10 * (np.arange(150) + 0.5),
                                                             "x": 500000.0 + 10 * (np.arange(170) + 0.5)})
    da = da.rio.write_crs("EPSG:32633").rio.write_nodata(0)
    xr.Dataset({f"b{i}": da.isel(band=i, drop=True) for i in range(3)}).to_zarr(tmp_path / "cube.zarr",
                                                                                 consolidated=False)
    expected = predict_dataarray(da, str(model), tmp_path / "local", workers=2, name="cube", **TILING)
    base = {"model": {"type": "torchscript", "path": str(model)}, "tiling": TILING,
            "resources": {"workers": 2, "backend": "ray"}}
    wf = {**base, "inputs": {"paths": [str(tmp_path / "cube.zarr")], "format": "xarray-zarr"},
          "output": {"directory": str(tmp_path / "ray")}}
    result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert result.ok, result.outcomes
    np.testing.assert_array_equal(_read(tmp_path / "ray" / "cube" / "labels.tif")[0], expected.values)

    with live_dataarray(da, tmp_path, "live") as handle:  # a live array's handle, opened by Ray actors
        wf = {**base, "inputs": {"paths": [str(handle)], "format": "xarray"},
              "output": {"directory": str(tmp_path / "x")}}
        result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert not result.ok
    assert "lives in another process" in result.outcomes[0].error
    assert "not by Ray actors" in result.outcomes[0].error


def test_dask_callbacks_see_every_read_and_survive_even_without_the_chunk_cache(
    tmp_path: Path, conv_model: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A user's dask callback around ``predict_dataarray`` (two reading threads, the synchronous
    scheduler) sees a computation for every read, also where the chunks are too large to cache,
    and is still registered afterwards (dask's local scheduler, left to find it in its global set from
    several threads at once, could lose it)."""
    import threading

    from dask.callbacks import Callback

    from geoseg_pipeline.sources.dask_chunks import ChunkCache

    monkeypatch.setattr(ChunkCache, "cacheable", lambda self: False)  # as for chunks over the budget
    data = _scene(200, 220, seed=9)
    computing: set[int] = set()
    unseen: list[int] = []
    lock = threading.Lock()

    def chunk(block_info: Any = None) -> np.ndarray:
        (b, r, c) = block_info[None]["array-location"]
        with lock:
            if threading.get_ident() not in computing:
                unseen.append(threading.get_ident())
        return data[b[0]:b[1], r[0]:r[1], c[0]:c[1]]

    def start(dsk: Any, state: Any) -> None:
        with lock:
            computing.add(threading.get_ident())

    def finish(dsk: Any, state: Any, errored: bool) -> None:
        with lock:
            computing.discard(threading.get_ident())

    lazy = dask.array.map_blocks(chunk, chunks=((3,), (50,) * 4, (55,) * 4), dtype=data.dtype,
                                 meta=np.empty((0, 0, 0), data.dtype))
    da = xr.DataArray(lazy, dims=("band", "y", "x"), coords={"y": np.arange(200)[::-1] + 0.5,
                                                              "x": np.arange(220) + 0.5})
    watcher = Callback(start_state=start, finish=finish)
    with dask.config.set(scheduler="synchronous"), watcher:  # each chunk in the thread that computes it
        labels = predict_dataarray(da, str(conv_model(in_channels=3, classes=2)), tmp_path / "out", nodata=0,
                                   workers=2, **TILING)
        assert watcher._callback in Callback.active
    assert unseen == []  # every chunk ran inside a computation the callback saw start
    assert labels.shape == (200, 220)
