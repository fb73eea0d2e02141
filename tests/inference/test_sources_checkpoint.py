"""Checkpoints: MONAI networks by name, state dicts plain / nested / wrapped, safe loading."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from monai.networks import nets

from geoseg_pipeline.errors import ModelError
from geoseg_pipeline.inference.loading import load_model
from geoseg_pipeline.inference.sources_checkpoint import read_checkpoint, state_dict_of
from geoseg_pipeline.inference.sources_monai import build_monai_network
from geoseg_pipeline.spec import ModelSpec

CPU = torch.device("cpu")

#: Small real MONAI networks: (class name, constructor args, one input shape).
NETWORKS: list[tuple[str, dict[str, Any], tuple[int, ...]]] = [
    ("UNet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2],
              "num_res_units": 1}, (2, 1, 16, 16, 16)),
    ("BasicUNet", {"spatial_dims": 2, "in_channels": 2, "out_channels": 3, "features": [4, 4, 8, 8, 16, 4]},
     (2, 2, 32, 32)),
    ("SegResNet", {"spatial_dims": 3, "init_filters": 4, "in_channels": 1, "out_channels": 2,
                   "blocks_down": [1, 1], "blocks_up": [1], "norm": ["GROUP", {"num_groups": 2}]},
     (1, 1, 16, 16, 16)),
    ("DynUNet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "kernel_size": [3, 3, 3],
                 "strides": [1, 2, 2], "upsample_kernel_size": [2, 2], "filters": [4, 8, 8]}, (1, 1, 16, 16, 16)),
]


def _reference(name: str, args: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = getattr(nets, name)(**args)
    for p in net.parameters():  # move weights away from any default init, so loading is visible
        p.data.add_(0.01 * torch.randn_like(p))
    return net.eval()


def _spec(name: str, args: dict[str, Any], checkpoint: Path, **extra: Any) -> ModelSpec:
    return ModelSpec(type="monai", network=name, args=args, checkpoint=checkpoint, **extra)


def _assert_same_outputs(loaded: torch.nn.Module, reference: torch.nn.Module, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), reference(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("name", "args", "shape"), NETWORKS, ids=[n[0] for n in NETWORKS])
@pytest.mark.parametrize("layout", ["plain", "state_dict", "model", "network", "model_state_dict", "ddp"])
def test_monai_network_loads_its_state_dict(
    tmp_path: Path, name: str, args: dict[str, Any], shape: tuple[int, ...], layout: str
) -> None:
    reference = _reference(name, args)
    state = reference.state_dict()
    saved: Any = state
    if layout == "ddp":
        saved = {f"module.{k}": v for k, v in state.items()}
    elif layout != "plain":
        saved = {layout: state, "epoch": 7, "optimizer": {"lr": 1e-3}}
    torch.save(saved, tmp_path / "ckpt.pt")
    loaded = load_model(_spec(name, args, tmp_path / "ckpt.pt"), CPU)
    assert type(loaded) is type(reference) and not loaded.training
    _assert_same_outputs(loaded, reference, shape)


def test_lightning_style_prefix_is_dropped_when_it_makes_the_keys_fit(tmp_path: Path) -> None:
    name, args, shape = NETWORKS[0]
    reference = _reference(name, args)
    torch.save({"state_dict": {f"model.{k}": v for k, v in reference.state_dict().items()}}, tmp_path / "l.ckpt")
    _assert_same_outputs(load_model(_spec(name, args, tmp_path / "l.ckpt"), CPU), reference, shape)


def test_wrong_keys_list_missing_and_unexpected_with_counts(tmp_path: Path) -> None:
    unet_name, unet_args, _ = NETWORKS[0]
    seg_name, seg_args, _ = NETWORKS[2]
    torch.save(_reference(seg_name, seg_args).state_dict(), tmp_path / "seg.pt")
    with pytest.raises(ModelError) as info:
        load_model(_spec(unet_name, unet_args, tmp_path / "seg.pt"), CPU)
    message = str(info.value)
    expected = set(nets.UNet(**unet_args).state_dict())
    given = set(_reference(seg_name, seg_args).state_dict())
    assert str(tmp_path / "seg.pt") in message and "does not fit UNet" in message
    assert f"{len(expected - given)} key(s) of UNet missing" in message
    assert f"{len(given - expected)} unexpected key(s)" in message
    assert "more)" in message  # only the first ten of each are listed
    assert sorted(expected - given)[0] in message or next(iter(nets.UNet(**unet_args).state_dict())) in message


def test_shape_mismatch_names_the_parameter_and_both_shapes(tmp_path: Path) -> None:
    name, args, _ = NETWORKS[0]
    torch.save(_reference(name, {**args, "out_channels": 5}).state_dict(), tmp_path / "five.pt")
    with pytest.raises(ModelError) as info:
        load_model(_spec(name, args, tmp_path / "five.pt"), CPU)
    message = str(info.value)
    assert str(tmp_path / "five.pt") in message and "differ in shape" in message
    assert "in the checkpoint but" in message and "(5," in message and "(3," in message


def test_unknown_network_suggests_close_names(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"'Unet3' is not a network class of monai.networks.nets.*UNet"):
        build_monai_network("Unet3", {})
    with pytest.raises(ModelError, match="not a network class"):
        build_monai_network("one_hot", {})  # exists in monai.networks, not a class of nets


def test_bad_network_arguments_are_a_model_error() -> None:
    with pytest.raises(ModelError, match=r"MONAI UNet\(.*cannot be built.*model.args"):
        build_monai_network("UNet", {"spatial_dims": 3, "colour": "red"})


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "checkpoint file not found"),
        (b"", "empty or truncated"),
        (b"\x00garbage" * 20, "not a readable PyTorch checkpoint"),
        ("truncated", "not a readable PyTorch checkpoint"),
        ("torchscript", "is a TorchScript model"),
        # torch.load hands a .safetensors file to safetensors, which raises its own error
        (b"\x00garbage" * 20, "not a readable PyTorch checkpoint (damaged or not saved with torch.save or "
                               "safetensors): Error while deserializing header"),
        (b"", "Error while deserializing header"),
    ],
)
def test_unreadable_checkpoints_name_the_file(tmp_path: Path, content: bytes | str | None, fragment: str) -> None:
    path = tmp_path / ("bad.safetensors" if "deserializing" in fragment else "bad.pt")
    if content == "truncated":
        torch.save(torch.nn.Conv2d(1, 2, 3).state_dict(), path)
        path.write_bytes(path.read_bytes()[:200])
    elif content == "torchscript":
        torch.jit.script(torch.nn.Conv2d(1, 2, 3)).save(str(path))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(ModelError) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_no_state_dict_lists_the_top_level_keys(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "metrics": {"dice": 0.8}}, tmp_path / "meta.pt")
    with pytest.raises(ModelError, match=r"no state dict found: its top-level keys are \['epoch', 'metrics'\]"):
        state_dict_of(read_checkpoint(tmp_path / "meta.pt"), tmp_path / "meta.pt")


class _Payload:
    """Runs a shell command when unpickled: what a malicious checkpoint carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("wrapped", [True, False])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, wrapped: bool) -> None:
    name, args, _ = NETWORKS[0]
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if wrapped:  # a real state dict with a payload beside it
        torch.save({"state_dict": _reference(name, args).state_dict(), "x": _Payload(marker)}, path)
    else:  # a bare pickle, not even a torch archive
        path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ModelError) as info:
        load_model(_spec(name, args, path), CPU)
    message = str(info.value)
    assert f"{path} is a pickled model object, not a state dict" in message
    assert "would run arbitrary code" in message and "model.trust_pickle: true" in message
    assert not marker.exists()


def test_whole_pickled_model_needs_trust_pickle(tmp_path: Path) -> None:
    name, args, shape = NETWORKS[0]
    reference = _reference(name, args)
    torch.save(reference, tmp_path / "whole.pt")
    with pytest.raises(ModelError, match=r"pickled model object.*needs monai.networks.nets.unet.UNet"):
        load_model(_spec(name, args, tmp_path / "whole.pt"), CPU)
    loaded = load_model(_spec(name, args, tmp_path / "whole.pt", trust_pickle=True), CPU)
    _assert_same_outputs(loaded, reference, shape)
