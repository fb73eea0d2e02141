"""The vision model types (``smp``, ``torchgeo``) in the core install: their workflow keys are
checked without the libraries, and loading one says which extra is missing (the core install
has no torchvision, so no segmentation_models_pytorch, timm or TorchGeo; their own tests are in
``tests/vision``, run with ``.venv-vision``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from geoseg_pipeline.api import model_section
from geoseg_pipeline.errors import ModelError
from geoseg_pipeline.inference.loading import load_model
from geoseg_pipeline.spec import ModelSpec, parse_workflow

CPU = torch.device("cpu")
UNET = {"encoder_name": "resnet18", "in_channels": 4, "classes": 3}


def test_an_smp_section_is_checked_before_any_library_is_imported(tmp_path: Path) -> None:
    spec = parse_workflow({"inputs": {"paths": ["x.tif"]}, "output": {"directory": "out"},
                           "model": {"type": "smp", "architecture": "Unet", "args": UNET, "checkpoint": "unet.pt"}},
                          tmp_path)
    assert spec.model.checkpoint == tmp_path / "unet.pt"
    assert spec.model.source == f"segmentation_models_pytorch Unet ({tmp_path / 'unet.pt'})"
    with pytest.raises(ValueError, match=r"args\.encoder_weights is 'imagenet': segmentation_models_pytorch would "
                                         r"download .*set encoder_weights: null"):
        ModelSpec(type="smp", architecture="Unet", args={**UNET, "encoder_weights": "imagenet"}, checkpoint="u.pt")
    with pytest.raises(ValueError, match=r"args\.in_channels is 4 but model\.in_channels is 3; "
                                         r"args\.classes is 3 but model\.num_classes is 5"):
        ModelSpec(type="smp", architecture="Unet", args=UNET, checkpoint="u.pt", in_channels=3, num_classes=5)
    with pytest.raises(ValueError, match=r"architecture must be a class name of segmentation_models_pytorch"):
        ModelSpec(type="smp", architecture="smp.Unet()", checkpoint="u.pt")
    with pytest.raises(ValueError, match=r"type 'smp' needs 'architecture' .*; type 'smp' needs 'checkpoint'"):
        ModelSpec(type="smp")
    with pytest.raises(ValueError, match=r"'architecture' is not used by type 'monai' \(it goes with smp\)"):
        ModelSpec(type="monai", network="UNet", architecture="Unet", checkpoint="u.pt")
    with pytest.raises(ValueError, match=r"'args' is not used by type 'torchgeo'"):
        ModelSpec(type="torchgeo", checkpoint="task.ckpt", args={})


def test_a_checkpoint_file_is_taken_as_a_torchgeo_task() -> None:
    assert model_section("runs/epoch=9.ckpt") == {"type": "torchgeo", "checkpoint": "runs/epoch=9.ckpt"}
    spec = ModelSpec(**model_section("task.ckpt"))  # type: ignore[arg-type]
    assert spec.source == "TorchGeo checkpoint task.ckpt"


def test_the_core_install_names_the_vision_extra_and_imports_none_of_it(tmp_path: Path) -> None:
    # the core environment is the CPU torch without torchvision: none of the vision libraries
    assert importlib.util.find_spec("segmentation_models_pytorch") is None
    weights = tmp_path / "unet.pt"
    torch.save({"w": torch.zeros(1)}, weights)
    with pytest.raises(ModelError, match=r"model type smp needs segmentation_models_pytorch .*"
                                         r"pip install 'geoseg-pipeline\[vision\]'.*make install-vision"):
        load_model(ModelSpec(type="smp", architecture="Unet", args=UNET, checkpoint=weights), CPU)
    assert not {"segmentation_models_pytorch", "timm", "torchgeo", "torchvision"} & set(sys.modules)


def test_a_folder_that_is_no_model_folder_says_what_it_lacks(tmp_path: Path) -> None:
    """``--model FOLDER`` used to fall back to TorchScript: "model file not found" for a folder
    that exists."""
    from geoseg_pipeline.errors import SpecError

    nn = tmp_path / "nn"
    (nn / "fold_0").mkdir(parents=True)
    (nn / "dataset.json").write_text("{}", encoding="utf-8")
    with pytest.raises(SpecError, match=r"nn: an incomplete nnU-Net model folder: plans\.json missing"):
        model_section(str(nn))
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(SpecError, match=r"hf: has config\.json but no weights"):
        model_section(str(tmp_path / "hf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match=r"empty: is a folder but no model folder: an nnU-Net model"):
        model_section(str(tmp_path / "empty"))
