"""The model section: every type, the fields each takes, and their paths."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from geoseg_pipeline.errors import SpecError
from geoseg_pipeline.spec import ModelSpec, parse_workflow


def _workflow(model: dict[str, Any]) -> dict[str, Any]:
    return {"inputs": {"paths": ["x/*.nii.gz"]}, "model": model, "output": {"directory": "out"},
            "tiling": {"roi_size": [16, 16, 16]}}


def _problems(model: dict[str, Any], base: Path = Path("/base")) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_workflow(_workflow(model), base)
    return dict(info.value.problems)


@pytest.mark.parametrize("model", [
    {"type": "builtin", "name": "ct-demo"},
    {"type": "torchscript", "path": "m.pt"},
    {"type": "onnx", "path": "m.onnx", "in_channels": 1},
    {"type": "monai", "network": "UNet", "args": {"spatial_dims": 3, "channels": [4, 8]}, "checkpoint": "w.pt"},
    {"type": "monai", "network": "SegResNet", "checkpoint": "w.pt", "trust_pickle": True},
    {"type": "python", "import_path": "my_nets.seg:Net", "args": {"depth": 3}, "trust_code": True},
    {"type": "python", "import_path": "my_nets:Outer.Net", "checkpoint": "w.pt", "trust_code": True},
])
def test_valid_models(model: dict[str, Any]) -> None:
    spec = ModelSpec.model_validate(model)
    assert spec.type == model["type"]


@pytest.mark.parametrize(("model", "fragments"), [
    ({"type": "monai", "checkpoint": "w.pt"}, ["type 'monai' needs 'network'", "monai.networks.nets"]),
    ({"type": "monai", "network": "UNet"}, ["type 'monai' needs 'checkpoint'", "predicts noise"]),
    ({"type": "onnx"}, ["type 'onnx' needs 'path'"]),
    ({"type": "bundle"}, ["type 'bundle' needs 'bundle'", "configs/inference.json"]),
    ({"type": "python", "import_path": "a.b:C"}, ["trust_code: true"]),
    ({"type": "python", "import_path": "a.b:C", "trust_code": False}, ["trust_code: true"]),
    ({"type": "python", "trust_code": True}, ["type 'python' needs 'import_path'"]),
    ({"type": "torchscript", "path": "m.pt", "checkpoint": "w.pt"},
     ["'checkpoint' is not used by type 'torchscript' (it goes with monai, bundle, python, nnunet, smp, torchgeo)"]),
    ({"type": "builtin", "name": "ct-demo", "trust_code": True}, ["'trust_code' is not used by type 'builtin'"]),
    ({"type": "monai", "network": "UNet", "checkpoint": "w.pt", "trust_code": True},
     ["'trust_code' is not used by type 'monai' (it goes with bundle, python, nnunet, huggingface)"]),
    ({"type": "onnx", "path": "m.onnx", "name": "x", "args": {}}, ["'args' is not used", "'name' is not used"]),
    ({"type": "onnx", "path": "m.onnx", "mirroring": False}, ["'mirroring' is not used by type 'onnx'"]),
])
def test_combinations_are_checked_with_the_fields_named(model: dict[str, Any], fragments: list[str]) -> None:
    problems = _problems(model)
    assert list(problems) == ["model"]
    for fragment in fragments:
        assert fragment in problems["model"], fragment


def test_every_combination_problem_is_reported_at_once() -> None:
    message = _problems({"type": "python", "path": "m.pt"})["model"]
    assert "needs 'import_path'" in message and "trust_code: true" in message and "'path' is not used" in message


@pytest.mark.parametrize(("model", "path", "fragment"), [
    ({"type": "monai", "network": "torch.nn.Conv3d", "checkpoint": "w.pt"}, "model.network", "type: python"),
    ({"type": "python", "import_path": "my_nets.seg.Net", "trust_code": True}, "model.import_path",
     "package.module:ClassName"),
    ({"type": "tflite", "path": "m.tflite"}, "model.type", "'tflite'"),
])
def test_field_problems(model: dict[str, Any], path: str, fragment: str) -> None:
    problems = _problems(model)
    assert path in problems and fragment in problems[path]


def test_network_may_carry_the_monai_module_prefix() -> None:
    spec = ModelSpec(type="monai", network="monai.networks.nets.SwinUNETR", checkpoint=Path("w.pt"))
    assert spec.network == "SwinUNETR"


def test_relative_model_paths_resolve_against_the_workflow_folder(tmp_path: Path) -> None:
    for model, fields in [
        ({"type": "monai", "network": "UNet", "checkpoint": "weights/w.pt"}, {"checkpoint": "weights/w.pt"}),
        ({"type": "onnx", "path": "models/m.onnx"}, {"path": "models/m.onnx"}),
        ({"type": "python", "import_path": "a:B", "checkpoint": "../w.pt", "trust_code": True},
         {"checkpoint": "../w.pt"}),
    ]:
        spec = parse_workflow(_workflow(model), tmp_path)
        for field, relative in fields.items():
            assert getattr(spec.model, field) == Path(os.path.normpath(tmp_path / relative)), field


def test_bundle_path_resolves_and_the_bundle_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "bundles" / "spleen"
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "models" / "model.pt").write_bytes(b"")
    (folder / "configs" / "inference.json").write_text(json.dumps({"network_def": {"_target_": "UNet"}}))
    spec = parse_workflow(_workflow({"type": "bundle", "bundle": "bundles/spleen", "trust_pickle": True}), tmp_path)
    assert spec.model.bundle == folder and spec.model.trust_pickle and not spec.model.trust_code
    assert spec.model.source == f"bundle {folder}"


def test_bundle_problems_come_with_other_problems(tmp_path: Path) -> None:
    data = _workflow({"type": "bundle", "bundle": "missing"})
    data["tiling"]["overlap"] = 2
    with pytest.raises(SpecError) as info:
        parse_workflow(data, tmp_path)
    problems = dict(info.value.problems)
    assert "bundle folder not found" in problems["model.bundle"] and "tiling.overlap" in problems


@pytest.mark.parametrize(("model", "source"), [
    ({"type": "builtin", "name": "ct-demo"}, "built-in model ct-demo"),
    ({"type": "torchscript", "path": "/m/net.pt"}, "/m/net.pt"),
    ({"type": "onnx", "path": "/m/net.onnx"}, "/m/net.onnx"),
    ({"type": "monai", "network": "UNet", "checkpoint": "/m/w.pt"}, "MONAI UNet (/m/w.pt)"),
    ({"type": "python", "import_path": "a.b:C", "trust_code": True}, "a.b:C"),
])
def test_source_names_the_model_for_messages(model: dict[str, Any], source: str) -> None:
    assert ModelSpec.model_validate(model).source == source


def test_spec_stays_frozen() -> None:
    spec = ModelSpec(type="monai", network="UNet", checkpoint=Path("w.pt"))
    with pytest.raises(ValidationError):
        spec.trust_pickle = True  # type: ignore[misc]
