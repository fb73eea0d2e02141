"""load_model for every model type, and the probe that checks a model before any data is read."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from monai.networks.nets import UNet

from geoseg_pipeline.errors import ModelError
from geoseg_pipeline.inference.loading import first_conv_in_channels, load_model, probe_model
from geoseg_pipeline.inference.sources_python import build_python_model
from geoseg_pipeline.spec import ModelSpec

CPU = torch.device("cpu")
UNET_ARGS = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2]}


def _unet(tmp_path: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    net = UNet(**UNET_ARGS).eval()
    torch.save(net.state_dict(), tmp_path / "unet.pt")
    return net


def test_probe_names_channels_of_model_and_workflow(tmp_path: Path) -> None:
    _unet(tmp_path)
    model = load_model(ModelSpec(type="monai", network="UNet", args=UNET_ARGS, checkpoint=tmp_path / "unet.pt"), CPU)
    assert first_conv_in_channels(model) == 1
    with pytest.raises(ModelError) as info:
        probe_model(model, 4, (16, 16), CPU, source="MONAI UNet (unet.pt)")
    message = str(info.value)
    assert message.startswith("MONAI UNet (unet.pt): the model fails on a window of 4 channel(s)")
    assert "takes 1 input channel(s)" in message and "workflow gives 4" in message


def test_probe_names_the_dims_of_model_and_roi(tmp_path: Path) -> None:
    _unet(tmp_path)
    model = load_model(ModelSpec(type="monai", network="UNet", args=UNET_ARGS, checkpoint=tmp_path / "unet.pt"), CPU)
    with pytest.raises(ModelError, match=r"the model is 2D \(its first convolution is Conv2d\) but "
                                         r"tiling.roi_size \[16, 16, 16\] is 3D"):
        probe_model(model, 1, (16, 16, 16), CPU)


def test_probe_refuses_a_wrong_output_shape_naming_the_source() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3)).eval()  # no padding: the output shrinks
    with pytest.raises(ModelError) as info:
        probe_model(model, 2, (8, 8), CPU, source="/models/shrinks.pt")
    assert str(info.value) == ("/models/shrinks.pt: the model returned (1, 3, 6, 6) for a window of (1, 2, 8, 8); "
                               "expected (1, classes, 8, 8)")


def test_probe_learns_the_classes(tmp_path: Path) -> None:
    net = _unet(tmp_path)
    info = probe_model(net, 1, (16, 16), CPU)
    assert (info.in_channels, info.num_classes, info.spatial_dims) == (1, 3, 2)


def test_torchscript_still_loads_by_path_and_says_when_it_is_a_checkpoint(tmp_path: Path) -> None:
    net = _unet(tmp_path)
    torch.jit.script(net).save(str(tmp_path / "ts.pt"))
    model = load_model(ModelSpec(type="torchscript", path=tmp_path / "ts.pt"), CPU)
    x = torch.randn(1, 1, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), net(x))
    with pytest.raises(ModelError, match=r"unet\.pt: not a TorchScript model .*use type monai or python"):
        load_model(ModelSpec(type="torchscript", path=tmp_path / "unet.pt"), CPU)


@pytest.fixture()
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable module with a user network, as ``package.module``."""
    package = tmp_path / "user_nets_for_geoseg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(textwrap.dedent("""
        import torch

        class TinySeg(torch.nn.Module):
            def __init__(self, in_channels: int, classes: int) -> None:
                super().__init__()
                self.head = torch.nn.Conv2d(in_channels, classes, 1)

            def forward(self, x):
                return self.head(x)

        def not_a_module(**kwargs):
            return 42
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_nets_for_geoseg.nets"


def test_python_import_path_with_trust_and_checkpoint(tmp_path: Path, user_module: str) -> None:
    args = {"in_channels": 2, "classes": 3}
    reference = build_python_model(f"{user_module}:TinySeg", args, trust_code=True)
    torch.save({"model": reference.state_dict()}, tmp_path / "tiny.pt")
    spec = ModelSpec(type="python", import_path=f"{user_module}:TinySeg", args=args, checkpoint=tmp_path / "tiny.pt",
                     trust_code=True)
    model = load_model(spec, CPU)
    x = torch.randn(2, 2, 8, 8)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), reference(x))
    assert not model.training


def test_python_import_path_needs_trust(user_module: str) -> None:
    spec = ModelSpec.model_construct(type="python", import_path=f"{user_module}:TinySeg", args={}, trust_code=False)
    with pytest.raises(ModelError, match=r"set model\.trust_code: true"):
        load_model(spec, CPU)


@pytest.mark.parametrize(("target", "fragment"), [
    ("no_such_package_xyz.nets:Net", "cannot import 'no_such_package_xyz.nets'"),
    ("{module}:Missing", "has no 'Missing'"),
    ("{module}:not_a_module", "returned an object of type int, not a torch module"),
    ("{module}:TinySeg", "calling it with model.args failed: TypeError"),
])
def test_python_import_path_errors(user_module: str, target: str, fragment: str) -> None:
    with pytest.raises(ModelError, match=fragment):
        build_python_model(target.format(module=user_module), {"colour": 1} if "TinySeg" in target else {},
                           trust_code=True)


def test_unknown_builtin_lists_the_available() -> None:
    with pytest.raises(ModelError, match="unknown built-in model 'nope'; available: ct-demo, landcover-demo"):
        load_model(ModelSpec(type="builtin", name="nope"), CPU)


def test_a_loader_error_without_a_message_is_named_by_its_type(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Some loaders raise errors with an empty message: the ModelError names the file and the
    error's type instead of failing on the missing first line."""
    path = tmp_path / "model.pt"
    path.write_bytes(b"anything")

    def silent(*args: object, **kwargs: object) -> None:
        raise RuntimeError("")

    monkeypatch.setattr(torch.jit, "load", silent)
    with pytest.raises(ModelError, match=r"model\.pt: not a TorchScript model \(RuntimeError\)"):
        load_model(ModelSpec(type="torchscript", path=path), torch.device("cpu"))


def test_a_model_with_one_output_channel_is_refused_with_the_binary_recipe() -> None:
    """argmax over one class labels every pixel 0: a map with nothing in it, without a word."""
    one = torch.nn.Conv2d(4, 1, 1)
    with pytest.raises(ModelError, match=r"m\.pt: the model returns one channel.*torch\.zeros_like\(z\), z"):
        probe_model(one, 4, (32, 32), torch.device("cpu"), source="m.pt")

    class Binary(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = one(x)
            return torch.cat([torch.zeros_like(z), z], dim=1)

    assert probe_model(Binary(), 4, (32, 32), torch.device("cpu")).num_classes == 2
