"""``model.type: smp``: segmentation_models_pytorch networks (smp and timm encoders) built small
with random weights offline, against smp's own forward pass blended by MONAI's
``sliding_window_inference``; checkpoints that do not fit, pickles and names that are wrong."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import segmentation_models_pytorch as smp
import torch
from vision_models import assert_matches, monai_reference, run_job, scene

from geoseg_pipeline.errors import ModelError
from geoseg_pipeline.inference.loading import load_model, probe_model
from geoseg_pipeline.spec import ModelSpec

CPU = torch.device("cpu")
#: small networks: an smp encoder, a timm one (tu-), a DeepLab head
NETWORKS: dict[str, tuple[str, dict[str, Any]]] = {
    "unet-resnet18": ("Unet", {"encoder_name": "resnet18", "encoder_depth": 3, "decoder_channels": [32, 16, 8],
                               "in_channels": 4, "classes": 3}),
    "fpn-timm": ("FPN", {"encoder_name": "tu-mobilenetv3_small_050", "in_channels": 4, "classes": 3,
                         "decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32}),
    "deeplabv3plus": ("DeepLabV3Plus", {"encoder_name": "resnet18", "in_channels": 4, "classes": 3,
                                        "decoder_channels": 32}),
}


def save_network(tmp_path: Path, architecture: str, args: dict[str, Any], seed: int = 0) -> tuple[torch.nn.Module,
                                                                                                    Path]:
    """smp's network built as a user would (random weights, nothing downloaded) and its state dict file."""
    torch.manual_seed(seed)
    network = getattr(smp, architecture)(encoder_weights=None, **args).eval()
    path = tmp_path / f"{architecture.lower()}.pt"
    torch.save(network.state_dict(), path)
    return network, path


@pytest.mark.parametrize("name", list(NETWORKS))
def test_a_job_equals_smp_and_monai(tmp_path: Path, write_raster: Callable[..., Path], name: str) -> None:
    architecture, args = NETWORKS[name]
    network, weights = save_network(tmp_path, architecture, args)
    src, data = scene(write_raster, 4)
    model = {"type": "smp", "architecture": architecture, "args": args, "checkpoint": str(weights),
             "in_channels": 4, "num_classes": 3}
    logits, labels = run_job(tmp_path, src, model)
    assert_matches(logits, labels, monai_reference(network, data))


def test_an_aux_head_gives_the_masks_and_nested_ddp_checkpoints_load(tmp_path: Path,
                                                                   write_raster: Callable[..., Path]) -> None:
    args = {**NETWORKS["unet-resnet18"][1], "aux_params": {"classes": 2}}
    network, weights = save_network(tmp_path, "Unet", args)
    wrapped = torch.nn.DataParallel(network)
    torch.save({"epoch": 3, "state_dict": wrapped.state_dict()}, weights)
    src, data = scene(write_raster, 4)
    logits, labels = run_job(tmp_path, src, {"type": "smp", "architecture": "unet", "args": args,
                                             "checkpoint": str(weights)})
    assert_matches(logits, labels, monai_reference(lambda x: network(x)[0], data))


def _spec(architecture: str, weights: Path, **extra: Any) -> ModelSpec:
    args = extra.pop("args", NETWORKS["unet-resnet18"][1])
    return ModelSpec(type="smp", architecture=architecture, args=args, checkpoint=weights, **extra)


def test_wrong_names_checkpoints_and_channels_are_clear_errors(tmp_path: Path) -> None:
    architecture, args = NETWORKS["unet-resnet18"]
    _, weights = save_network(tmp_path, architecture, args)
    with pytest.raises(ModelError, match=r"'Unett' is not an architecture of segmentation_models_pytorch .*"
                                         r"did you mean Unet"):
        load_model(_spec("Unett", weights), CPU)
    with pytest.raises(ModelError, match=r"Unet\(.*encoder_name='resnet-18'.*\) cannot be built.*model\.args"):
        load_model(_spec("Unet", weights, args={**args, "encoder_name": "resnet-18"}), CPU)
    # another encoder: keys that do not fit, the file named
    with pytest.raises(ModelError, match=rf"{weights}: the checkpoint does not fit Unet: .*missing"):
        load_model(_spec("Unet", weights, args={**args, "encoder_name": "resnet34"}), CPU)
    # more classes than the checkpoint was trained with: the shapes named
    with pytest.raises(ModelError, match=rf"{weights}: 2 parameter\(s\) .* differ in shape: "
                                         r"segmentation_head\.0\.weight is \(3, 8, 3, 3\) in the checkpoint"):
        load_model(_spec("Unet", weights, args={**args, "classes": 5}), CPU)
    with pytest.raises(ModelError, match=r"checkpoint file not found"):
        load_model(_spec("Unet", tmp_path / "absent.pt"), CPU)
    # 3 bands given to a 4-channel network: both numbers named by the probe
    model = load_model(_spec("Unet", weights), CPU)
    with pytest.raises(ModelError, match=r"takes 4 input channel\(s\) .* but the workflow gives 3"):
        probe_model(model, 3, (64, 64), CPU, source=_spec("Unet", weights).source)
    # a roi DeepLabV3+ cannot divide by its output stride: smp's own reason (smp's Unet takes any roi)
    deeplab, deeplab_args = NETWORKS["deeplabv3plus"]
    _, deeplab_weights = save_network(tmp_path, deeplab, deeplab_args)
    model = load_model(_spec(deeplab, deeplab_weights, args=deeplab_args), CPU)
    with pytest.raises(ModelError, match=r"fails on a window of 4 channel\(s\) and size \[60, 60\].*"
                                         r"divisible by 16"):
        probe_model(model, 4, (60, 60), CPU)


def test_a_pickled_model_is_refused_unless_trusted(tmp_path: Path) -> None:
    architecture, args = NETWORKS["unet-resnet18"]
    network, _ = save_network(tmp_path, architecture, args)
    pickled = tmp_path / "whole.pt"
    torch.save(network, pickled)  # the whole module: loading it imports and runs smp's code
    with pytest.raises(ModelError, match=rf"{pickled} is a pickled model object.*trust_pickle"):
        load_model(_spec("Unet", pickled), CPU)
    loaded = load_model(_spec("Unet", pickled, trust_pickle=True), CPU)
    assert probe_model(loaded, 4, (64, 64), CPU).num_classes == 3


def test_encoder_weights_are_refused_before_anything_is_built() -> None:
    with pytest.raises(ValueError, match=r"args\.encoder_weights is 'imagenet'.*download.*encoder_weights: null"):
        ModelSpec(type="smp", architecture="Unet", args={"encoder_weights": "imagenet"}, checkpoint="x.pt")
    # the loader refuses too, should a spec be built without validation
    spec = ModelSpec.model_construct(type="smp", architecture="Unet", args={"encoder_weights": "imagenet"},
                                     checkpoint=Path("x.pt"), trust_pickle=False)
    with pytest.raises(ModelError, match=r"model\.args\.encoder_weights is 'imagenet'"):
        load_model(spec, CPU)
