"""Volume DataArrays through predict_dataarray (local backend): the labels equal MONAI's
sliding_window_inference, come back on the input's dimensions and coordinates, the NIfTI written
beside them has the voxel geometry of the coordinates (as nibabel reads it), a dask-backed volume
is read chunk by chunk, and the statistics are in mL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask
import dask.array
import nibabel as nib
import numpy as np
import pytest
import torch
import xarray as xr
from dask_counts import ChunksPerCompute
from monai.inferers import sliding_window_inference

from geoseg_pipeline import predict_dataarray
from geoseg_pipeline.errors import InputDataError

SHAPE = (40, 36, 30)  # z, y, x
TILING: dict[str, Any] = {"roi_size": 16, "overlap": 0.25, "blend": "gaussian", "batch_size": 4, "block_size": 32}


def _model(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(6, 3, 3, padding=1))
    path = tmp_path / "net3d.pt"
    torch.jit.script(net.eval()).save(str(path))
    return path, net.eval()


def _volume() -> np.ndarray:
    data = np.random.default_rng(5).normal(0, 1, (2, *SHAPE)).astype(np.float32)
    data[:, 10:25, 8:20, 5:18] += 2.0  # a blob, so that the classes differ in size
    return data


def _coords() -> dict[str, np.ndarray]:
    return {"z": -60.0 + 2.5 * np.arange(SHAPE[0]), "y": 40.0 - 0.9 * np.arange(SHAPE[1]),
            "x": 12.0 + 0.9 * np.arange(SHAPE[2])}


def _monai(net: torch.nn.Module, data: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = sliding_window_inference(torch.from_numpy(data)[None], (16, 16, 16), 4, net, overlap=0.25,
                                       mode="gaussian")
    return np.asarray(out[0].argmax(0).numpy())


@pytest.mark.parametrize("backing", ["numpy", "dask"])
def test_a_volume_equals_monai_on_its_coordinates(tmp_path: Path, backing: str) -> None:
    model, net = _model(tmp_path)
    data = _volume()
    backed: Any = data if backing == "numpy" else dask.array.from_array(data, chunks=(2, 10, 12, 15))
    da = xr.DataArray(backed, dims=("channel", "z", "y", "x"), coords=_coords())
    labels = predict_dataarray(da, str(model), tmp_path / "out", workers=2, name="vol", classes=["a", "b", "c"],
                               **TILING)

    ref = _monai(net, data)
    assert labels.dims == ("z", "y", "x") and labels.shape == SHAPE and labels.name == "labels"
    assert (labels.values == ref).mean() >= 0.9999
    for d in "zyx":
        np.testing.assert_array_equal(labels[d].values, da[d].values)
    assert labels.attrs["output"] == str((tmp_path / "out" / "vol" / "labels.zarr").resolve())

    # the NIfTI beside it, as nibabel reads it: the same voxels, the coordinates' geometry
    img = nib.load(tmp_path / "out" / "vol" / "labels.nii.gz")
    np.testing.assert_array_equal(np.asarray(img.dataobj), labels.values)
    expected = np.array([[0, 0, 0.9, 12.0], [0, -0.9, 0, 40.0], [2.5, 0, 0, -60.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(img.affine, expected, rtol=0, atol=1e-5)
    assert nib.aff2axcodes(img.affine) == ("S", "P", "R")

    stats = labels.attrs["statistics"]
    assert stats["source"] == "DataArray 'vol'" and stats["area_method"] == "voxel"
    voxel_ml = 2.5 * 0.9 * 0.9 / 1000
    by_name = {c["class_name"]: c for c in stats["classes"]}
    for index, name in enumerate("abc"):
        count = int((labels.values == index).sum())
        assert by_name[name]["pixels"] == count
        assert by_name[name]["volume_ml"] == pytest.approx(count * voxel_ml, rel=1e-9)


def test_a_dask_volume_is_read_chunk_by_chunk_never_whole(tmp_path: Path) -> None:
    model, net = _model(tmp_path)
    data = np.concatenate([_volume(), _volume()], axis=1)  # 80 slices: the job reads slabs of 16 and margins
    ran: list[tuple[int, ...]] = []
    per_compute = ChunksPerCompute()

    def chunk(block_info: Any = None) -> np.ndarray:
        loc = block_info[None]["array-location"]
        ran.append(tuple(block_info[None]["chunk-location"]))
        per_compute.ran()
        return data[tuple(slice(a, b) for a, b in loc)]

    lazy = dask.array.map_blocks(chunk, chunks=((2,), (10,) * 8, (12,) * 3, (10,) * 3), dtype=data.dtype,
                                 name="volume-chunks", meta=np.empty((0, 0, 0, 0), data.dtype))
    coords = {**_coords(), "z": -60.0 + 2.5 * np.arange(80)}
    da = xr.DataArray(lazy, dims=("channel", "z", "y", "x"), coords=coords)
    with per_compute:
        labels = predict_dataarray(da, str(model), tmp_path / "out", workers=2, name="lazy",
                                   **{**TILING, "block_size": 16})
    # a task region is a slab of 16 slices and a window's margin: a few of the 8 chunk layers
    assert per_compute.counts and max(per_compute.counts) <= 4 * 3 * 3
    assert set(ran) == {(0, z, y, x) for z in range(8) for y in range(3) for x in range(3)}
    assert len(ran) == sum(per_compute.counts) == 72  # each chunk computed once (the chunk cache)
    assert (labels.values == _monai(net, data)).mean() >= 0.9999


def test_a_single_channel_zyx_volume_is_a_volume(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1)).eval()
    model = tmp_path / "one.pt"
    torch.jit.script(net).save(str(model))
    data = _volume()[:1]
    da = xr.DataArray(data[0], dims=("z", "y", "x"), coords=_coords())
    labels = predict_dataarray(da, str(model), tmp_path / "out", workers=1, name="one", formats=["zarr"],
                               roi_size=(16, 16, 8), block_size=32)
    with torch.no_grad():
        ref = sliding_window_inference(torch.from_numpy(data)[None], (16, 16, 8), 8, net, overlap=0.25,
                                       mode="gaussian")[0].argmax(0).numpy()
    assert (labels.values == ref).mean() >= 0.9999
    assert not (tmp_path / "out" / "one" / "labels.nii.gz").exists()  # only what was asked, and labels.zarr


def test_volume_mistakes_are_clear_errors(tmp_path: Path) -> None:
    model, _ = _model(tmp_path)
    da = xr.DataArray(_volume(), dims=("channel", "z", "y", "x"), coords=_coords())
    with pytest.raises(InputDataError, match="DataArray 'vol' is a volume: give roi_size with three sizes"):
        predict_dataarray(da, str(model), tmp_path / "a", name="vol")
    with pytest.raises(InputDataError, match=r"roi_size needs three sizes \(i, j, k\), got \[16, 16\]"):
        predict_dataarray(da, str(model), tmp_path / "b", name="vol", roi_size=(16, 16))
    with pytest.raises(InputDataError, match="dimension 'z' has no coordinate"):
        predict_dataarray(da.drop_vars("z"), str(model), tmp_path / "c", name="vol", roi_size=16)
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
