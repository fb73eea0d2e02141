"""ONNX models through onnxruntime: equal to torch, fixed dimensions checked before any data."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from geoseg_pipeline.errors import ModelError
from geoseg_pipeline.inference.loading import first_conv_in_channels, load_model, probe_model
from geoseg_pipeline.inference.onnx_model import OnnxModel
from geoseg_pipeline.spec import ModelSpec

CPU = torch.device("cpu")


def _net(dims: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    return torch.nn.Sequential(conv(3, 8, 3, padding=1), torch.nn.ReLU(), conv(8, 4, 1)).eval()


def _export(net: torch.nn.Module, path: Path, shape: tuple[int, ...], dynamic: tuple[int, ...] = (0,)) -> Path:
    axes = {i: f"d{i}" for i in dynamic}
    with warnings.catch_warnings():  # torch 2.13 marks the TorchScript-based exporter deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (torch.zeros(shape),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": axes, "y": axes})
    return path


def _spec(path: Path) -> ModelSpec:
    return ModelSpec(type="onnx", path=path)


@pytest.mark.parametrize("dims", [2, 3])
def test_onnx_equals_torch(tmp_path: Path, dims: int) -> None:
    net = _net(dims)
    path = _export(net, tmp_path / "net.onnx", (1, 3, *[8] * dims), dynamic=(0, *range(2, dims + 2)))
    model = load_model(_spec(path), CPU, threads=1)
    assert isinstance(model, OnnxModel) and model.providers == ["CPUExecutionProvider"]
    x = torch.randn(3, 3, *[12] * dims, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        y = model(x)
        torch.testing.assert_close(y, net(x), rtol=1e-4, atol=1e-4)
    assert y.dtype == torch.float32 and y.device == x.device
    info = probe_model(model, 3, (16,) * dims, CPU, source=str(path))
    assert (info.in_channels, info.num_classes, info.spatial_dims) == (3, 4, dims)
    assert first_conv_in_channels(model) == 3


def test_fixed_batch_runs_in_chunks(tmp_path: Path) -> None:
    net = _net()
    path = _export(net, tmp_path / "b1.onnx", (1, 3, 16, 16), dynamic=())  # batch and roi fixed
    model = load_model(_spec(path), CPU)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        torch.testing.assert_close(model(x), net(x), rtol=1e-4, atol=1e-4)


def test_fixed_dims_that_disagree_with_the_workflow_are_refused(tmp_path: Path) -> None:
    path = _export(_net(), tmp_path / "fixed.onnx", (1, 3, 16, 16))  # channels and roi fixed
    model = load_model(_spec(path), CPU)
    with pytest.raises(ModelError) as info:
        probe_model(model, 3, (32, 32), CPU)
    assert str(path) in str(info.value) and "[16, 16]" in str(info.value) and "[32, 32]" in str(info.value)
    with pytest.raises(ModelError) as info:
        probe_model(model, 4, (16, 16), CPU)
    assert "takes 3 input channel(s)" in str(info.value) and "gives 4" in str(info.value)
    with pytest.raises(ModelError, match=r"takes 2D windows .* tiling.roi_size \[16, 16, 16\] is 3D"):
        probe_model(model, 3, (16, 16, 16), CPU)


def _save_graph(path: Path, inputs: list[onnx.ValueInfoProto], nodes: list[onnx.NodeProto],
                output: onnx.ValueInfoProto) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, [output])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_more_than_one_input_is_refused(tmp_path: Path) -> None:
    a = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 1, 8, 8])
    b = helper.make_tensor_value_info("prior", TensorProto.FLOAT, ["n", 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, 8, 8])
    path = _save_graph(tmp_path / "two.onnx", [a, b], [helper.make_node("Add", ["image", "prior"], ["y"])], y)
    with pytest.raises(ModelError) as info:
        load_model(_spec(path), CPU)
    message = str(info.value)
    assert str(path) in message and "has 2 inputs" in message and "image" in message and "prior" in message


@pytest.mark.parametrize(("shape", "dtype", "fragment"), [
    (["n", 8, 8], TensorProto.FLOAT, "rank 3"),
    (["n", 1, 8, 8], TensorProto.INT64, "not a float tensor"),
])
def test_unexpected_input_is_refused(tmp_path: Path, shape: list[object], dtype: int, fragment: str) -> None:
    x = helper.make_tensor_value_info("x", dtype, shape)
    y = helper.make_tensor_value_info("y", dtype, shape)
    path = _save_graph(tmp_path / "odd.onnx", [x], [helper.make_node("Identity", ["x"], ["y"])], y)
    with pytest.raises(ModelError, match=fragment) as info:
        load_model(_spec(path), CPU)
    assert str(path) in str(info.value)


def test_float16_model_is_fed_float16_and_returns_float32(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["n", 2, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["n", 2, "h", "w"])
    path = _save_graph(tmp_path / "half.onnx", [x], [helper.make_node("Neg", ["x"], ["y"])], y)
    model = load_model(_spec(path), CPU)
    window = torch.tensor(np.arange(2 * 2 * 4 * 4, dtype=np.float32).reshape(2, 2, 4, 4))
    out = model(window)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, -window)


def test_missing_and_corrupt_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nope\.onnx: ONNX model file not found"):
        load_model(_spec(tmp_path / "nope.onnx"), CPU)
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelError, match=r"bad\.onnx: not a readable ONNX model"):
        load_model(_spec(tmp_path / "bad.onnx"), CPU)


def test_missing_onnxruntime_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _export(_net(), tmp_path / "net.onnx", (1, 3, 8, 8))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(ModelError, match=r"pip install geoseg-pipeline\[onnx\]"):
        load_model(_spec(path), CPU)
