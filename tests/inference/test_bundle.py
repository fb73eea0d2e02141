"""MONAI bundles: the network without running code, the weights, and the workflow defaults."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from monai.networks.nets import UNet

from geoseg_pipeline.errors import ModelError, SpecError
from geoseg_pipeline.inference.bundle import bundle_network
from geoseg_pipeline.inference.loading import load_model
from geoseg_pipeline.spec import IntensitySpec, load_workflow
from geoseg_pipeline.spec.bundle import Unsupported, bundle_defaults

CPU = torch.device("cpu")
UNET_ARGS = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2],
             "num_res_units": 1}


def _config(**overrides: Any) -> dict[str, Any]:
    """An inference config shaped like the MONAI model zoo's (spleen_ct_segmentation)."""
    config: dict[str, Any] = {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "num_classes": 3,
        "roi": [16, 16, 16],
        "network_def": {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": "@num_classes",
                        "channels": [4, 8], "strides": [2], "num_res_units": 1},
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -57, "a_max": 164, "b_min": 0.0,
             "b_max": 1.0, "clip": True},
            {"_target_": "EnsureTyped", "keys": "image"},
        ]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": "@roi", "sw_batch_size": 4, "overlap": 0.5,
                    "mode": "gaussian"},
    }
    config.update(overrides)
    return config


def _reference(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return UNet(**UNET_ARGS).eval()


def _bundle(tmp_path: Path, config: dict[str, Any], *, fmt: str = "json", weights: bool = True) -> Path:
    folder = tmp_path / "spleen_bundle"
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    text = json.dumps(config) if fmt == "json" else yaml.safe_dump(config)
    (folder / "configs" / f"inference.{fmt}").write_text(text, encoding="utf-8")
    if weights:
        torch.save(_reference().state_dict(), folder / "models" / "model.pt")
    return folder


def _workflow(tmp_path: Path, **sections: Any) -> Path:
    data = {"inputs": {"paths": ["ct/*.nii.gz"]}, "model": {"type": "bundle", "bundle": "spleen_bundle"},
            "output": {"directory": "out"}, **sections}
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_bundle_loads_its_network_and_weights(tmp_path: Path, fmt: str) -> None:
    _bundle(tmp_path, _config(), fmt=fmt)
    spec = load_workflow(_workflow(tmp_path))
    model = load_model(spec.model, CPU)
    assert isinstance(model, UNet) and not model.training
    x = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        torch.testing.assert_close(model(x), _reference()(x), rtol=0, atol=1e-6)


def test_bundle_defaults_fill_the_workflow_and_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _bundle(tmp_path, _config())
    with caplog.at_level(logging.INFO, logger="geoseg"):
        spec = load_workflow(_workflow(tmp_path))
    assert spec.model.bundle == folder
    assert spec.tiling.roi_size == (16, 16, 16) and spec.tiling.overlap == 0.5
    assert spec.tiling.blend == "gaussian" and spec.tiling.batch_size == 4
    assert spec.preprocessing.orientation == "RAS" and spec.preprocessing.spacing == (1.5, 1.5, 2.0)
    assert spec.preprocessing.intensity == IntensitySpec(mode="window", window=(-57, 164))
    logged = caplog.text
    assert "taken from the bundle" in logged and "tiling.roi_size=[16, 16, 16]" in logged
    assert "preprocessing.spacing=[1.5, 1.5, 2.0]" in logged


def test_workflow_values_win_over_the_bundle(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _bundle(tmp_path, _config())
    with caplog.at_level(logging.INFO, logger="geoseg"):
        spec = load_workflow(_workflow(tmp_path, tiling={"overlap": 0.25, "roi_size": [32, 32, 16]},
                                       preprocessing={"intensity": {"mode": "zscore_nonzero"}}))
    assert spec.tiling.overlap == 0.25 and spec.tiling.roi_size == (32, 32, 16)
    assert spec.preprocessing.intensity == IntensitySpec(mode="zscore_nonzero")
    assert spec.preprocessing.spacing == (1.5, 1.5, 2.0)  # not set by the workflow: the bundle's
    assert "tiling.overlap" not in caplog.text and "preprocessing.intensity" not in caplog.text


def test_unsupported_intensity_is_refused_unless_the_workflow_sets_it(tmp_path: Path) -> None:
    config = _config()
    config["preprocessing"]["transforms"][4].update(b_max=255.0)
    _bundle(tmp_path, config)
    with pytest.raises(SpecError) as info:
        load_workflow(_workflow(tmp_path))
    problems = dict(info.value.problems)
    assert list(problems) == ["preprocessing.intensity"]
    assert "[-57, 164] to [0.0, 255.0]" in problems["preprocessing.intensity"]
    assert "set preprocessing.intensity in the workflow" in problems["preprocessing.intensity"]
    spec = load_workflow(_workflow(tmp_path, preprocessing={"intensity": {"mode": "window", "window": [-57, 164]}}))
    assert spec.preprocessing.intensity is not None


def test_missing_bundle_or_weights_are_spec_problems(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_workflow(_workflow(tmp_path))
    assert "bundle folder not found" in dict(info.value.problems)["model.bundle"]
    _bundle(tmp_path, _config(), weights=False)
    with pytest.raises(SpecError) as info:
        load_workflow(_workflow(tmp_path))
    assert "models/model.pt: the bundle's weights are missing" in dict(info.value.problems)["model.bundle"]


def test_bundle_defaults_follow_references_and_literal_expressions(tmp_path: Path) -> None:
    config = _config(
        roi_side=24,
        roi="$[24, 24, 16]",
        pixdim=[0.8, 0.8],
        transforms_a=[{"_target_": "monai.transforms.Orientationd", "keys": "image", "axcodes": "$'LPS'"}],
        transforms_b=[{"_target_": "Spacingd", "keys": "image", "pixdim": "@pixdim"},
                      {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True, "channel_wise": True}],
    )
    config["preprocessing"] = {"_target_": "Compose", "transforms": "$@transforms_a + @transforms_b"}
    config["inferer"] = {"_target_": "SlidingWindowInferer", "roi_size": "$@roi", "overlap": "@#mode_overlap",
                         "mode_overlap": 0.625}
    defaults = bundle_defaults(_bundle(tmp_path, config))
    assert defaults == {
        "tiling.roi_size": [24, 24, 16],
        "tiling.overlap": 0.625,
        "preprocessing.orientation": "LPS",
        "preprocessing.spacing": [0.8, 0.8, 0.8],  # MONAI pads pixdim with its last value
        "preprocessing.intensity": {"mode": "zscore_nonzero"},
    }


def test_one_roi_size_is_repeated_over_the_network_dims(tmp_path: Path) -> None:
    config = _config()
    config["inferer"]["roi_size"] = 32
    assert bundle_defaults(_bundle(tmp_path, config))["tiling.roi_size"] == [32, 32, 32]


@pytest.mark.parametrize(
    ("change", "key", "fragment"),
    [
        (lambda c: c["inferer"].update(roi_size="$[s * 2 for s in @roi]"), "tiling.roi_size", "expression"),
        (lambda c: c["inferer"].update(roi_size=[96, -1, 96]), "tiling.roi_size", "positive sizes"),
        (lambda c: c["inferer"].update(overlap=[0.5, 0.25, 0.5]), "tiling.overlap", "one number"),
        (lambda c: c["preprocessing"]["transforms"].insert(2, c["preprocessing"]["transforms"].pop(3)),
         "preprocessing.spacing", "before it reorients"),
        (lambda c: c["preprocessing"]["transforms"].__setitem__(4, {"_target_": "NormalizeIntensityd", "keys": "x"}),
         "preprocessing.intensity", "over all voxels"),
        (lambda c: c["preprocessing"]["transforms"][4].update(clip=False), "preprocessing.intensity", "clip=False"),
    ],
)
def test_declarations_geoseg_cannot_reproduce_are_unsupported(
    tmp_path: Path, change: Any, key: str, fragment: str
) -> None:
    config = _config()
    change(config)
    value = bundle_defaults(_bundle(tmp_path, config))[key]
    assert isinstance(value, Unsupported) and fragment in value.reason


def test_transforms_geoseg_does_not_apply_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = _config()
    config["preprocessing"]["transforms"].append({"_target_": "CropForegroundd", "keys": "image"})
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        bundle_defaults(_bundle(tmp_path, config))
    assert "does not apply the bundle's preprocessing transform(s) CropForegroundd" in caplog.text


@pytest.mark.parametrize(
    ("network_def", "fragment"),
    [
        ({"_target_": "torch.nn.Conv3d", "in_channels": 1, "out_channels": 3, "kernel_size": 1},
         "not a class of monai.networks.nets"),
        ({**UNET_ARGS, "_target_": "UNet", "act": "$torch.nn.PReLU"}, "expression '$torch.nn.PReLU'"),
        ({**UNET_ARGS, "_target_": "UNet", "_requires_": "@imports"}, "_requires_"),
        ({**UNET_ARGS, "_target_": "UNet", "_mode_": "callable"}, "_mode_"),
        ({**UNET_ARGS, "_target_": "UNet", "out_channels": "$@num_classes + 0"}, "expression"),
    ],
)
def test_network_def_runs_no_code_without_trust(tmp_path: Path, network_def: dict[str, Any], fragment: str) -> None:
    folder = _bundle(tmp_path, _config(network_def=network_def))
    with pytest.raises(ModelError) as info:
        bundle_network(folder)
    assert "configs/inference.json" in str(info.value) and fragment in str(info.value)
    assert "model.trust_code: true" in str(info.value)


def test_refused_expression_is_never_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "evaluated"
    network_def = {**UNET_ARGS, "_target_": "UNet", "out_channels": f"$open({str(marker)!r}, 'w').close() or 3"}
    folder = _bundle(tmp_path, _config(network_def=network_def))
    with pytest.raises(ModelError, match="expression"):
        bundle_network(folder)
    assert not marker.exists()


def test_trust_code_lets_config_parser_evaluate(tmp_path: Path) -> None:
    network_def = {**UNET_ARGS, "_target_": "monai.networks.nets.UNet", "out_channels": "$@num_classes + 0"}
    folder = _bundle(tmp_path, _config(network_def=network_def))
    network = bundle_network(folder, trust_code=True)
    assert isinstance(network, UNet) and network.out_channels == 3


def test_full_module_path_inside_monai_networks_nets_is_allowed(tmp_path: Path) -> None:
    network_def = {**UNET_ARGS, "_target_": "monai.networks.nets.unet.UNet"}
    assert isinstance(bundle_network(_bundle(tmp_path, _config(network_def=network_def))), UNet)


def test_bundle_without_network_def_or_config(tmp_path: Path) -> None:
    config = _config()
    del config["network_def"]
    folder = _bundle(tmp_path, config)
    with pytest.raises(ModelError, match="has no network_def"):
        bundle_network(folder)
    (folder / "configs" / "inference.json").unlink()
    with pytest.raises(ModelError, match=r"not a MONAI bundle: no configs/inference\.json"):
        bundle_network(folder)


def test_only_the_arguments_geoseg_reads_must_be_readable(tmp_path: Path) -> None:
    config = _config(
        pre_a=[{"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"}],
        pre_b=[{"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -100, "a_max": 200, "b_min": 0,
                "b_max": 1, "clip": True, "dtype": "$torch.float32"}],
        pre_all="$@pre_a + @pre_b",
    )
    config["preprocessing"] = {"_target_": "Compose", "transforms": "@pre_all"}
    defaults = bundle_defaults(_bundle(tmp_path, config))
    assert defaults["preprocessing.orientation"] == "RAS"
    assert defaults["preprocessing.intensity"] == {"mode": "window", "window": [-100, 200]}


def test_a_network_monai_does_not_have_names_the_config(tmp_path: Path) -> None:
    folder = _bundle(tmp_path, _config(network_def={"_target_": "Unet3D", "spatial_dims": 3}))
    with pytest.raises(ModelError) as info:
        bundle_network(folder)
    assert str(folder / "configs" / "inference.json") in str(info.value)
    assert "'Unet3D' is not a network class of monai.networks.nets" in str(info.value)
