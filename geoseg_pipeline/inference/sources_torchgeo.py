"""TorchGeo task checkpoints (``model.type: torchgeo``): the Lightning ``.ckpt`` of a
``torchgeo.trainers.SemanticSegmentationTask``, run as its network.

The checkpoint holds ``hyper_parameters`` (``model``: unet, deeplabv3+, fcn, upernet, segformer,
dpt; ``backbone``, ``in_channels``, ``num_classes``, ``task``, ...) and the trained
``state_dict``. TorchGeo's own task class builds the network from the hyper-parameters, then the
state dict is loaded strictly. Nothing is downloaded: TorchGeo does not save the ``weights`` a
task started from (the state dict replaces them), and a checkpoint whose hyper-parameters do
name weights is refused. ``task: binary`` networks give one logit ``z`` per pixel; it becomes the
two classes ``[0, z]``, so the argmax is TorchGeo's ``sigmoid(z) > 0.5``. Refused: multilabel
tasks (their labels overlap: no label map), checkpoints of other tasks, and TerraTorch's task
checkpoints (see :data:`TERRATORCH_REFUSAL`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError, first_line
from .sources_checkpoint import load_weights, read_checkpoint, state_dict_of
from .sources_smp import import_vision

#: ``hyper_parameters['model']`` values of TorchGeo's SemanticSegmentationTask.
SEGMENTATION_MODELS = ("unet", "deeplabv3+", "fcn", "upernet", "segformer", "dpt")
#: The task's class as LightningCLI records it (``_class_path``), from either module.
TASK_CLASS_PATHS = ("torchgeo.trainers.SemanticSegmentationTask",
                    "torchgeo.trainers.segmentation.SemanticSegmentationTask")

TERRATORCH_REFUSAL = (
    "a TerraTorch task checkpoint (hyper_parameters model_factory {factory!r}, backbone {backbone!r}): not "
    "supported. TerraTorch builds the network through its own registries of backbones, necks and decoders "
    "(Prithvi, SatMAE-style ViTs, UPerNet, ...) from model_args, which only terratorch itself can do, and its "
    "pretrained backbones come from the Hugging Face Hub unless backbone_pretrained is false; export the trained "
    "network instead (torch.jit.trace(task.model, example) or torch.onnx.export) and use model type torchscript "
    "or onnx"
)


class BinaryAsTwoClasses(torch.nn.Module):
    """A one-logit (binary) network as two classes ``[0, z]``: the argmax is ``sigmoid(z) > 0.5``."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Background and foreground logits of a batch of windows."""
        z = self.network(x)
        return torch.cat([torch.zeros_like(z), z], dim=1)


def task_parts(checkpoint: Any, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``hyper_parameters`` and the state dict of a Lightning checkpoint. LightningCLI's own
    entries (``_instantiator``; ``_class_path``, checked by :func:`check_hyper_parameters`) are
    not the task's arguments.

    Raises:
        ModelError: not a Lightning checkpoint (no ``hyper_parameters`` or ``state_dict``).
    """
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("hyper_parameters"), Mapping) \
            or "state_dict" not in checkpoint:
        keys = sorted(map(str, checkpoint))[:10] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise ModelError(f"{path}: not a Lightning task checkpoint: it needs 'hyper_parameters' and 'state_dict' "
                         f"(its top-level keys are {keys}); for a plain state dict use model type smp or monai")
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if k != "_instantiator"}
    return hparams, state_dict_of(checkpoint, path)


def check_hyper_parameters(hparams: dict[str, Any], path: Path) -> None:
    """Refuse what geoseg cannot build offline or cannot run as a label map.

    Raises:
        ModelError: TerraTorch's task; weights named; no SemanticSegmentationTask; multilabel.
    """
    class_path = hparams.get("_class_path")
    if "model_factory" in hparams or "model_args" in hparams or str(class_path).startswith("terratorch."):
        args = hparams["model_args"] if isinstance(hparams.get("model_args"), Mapping) else {}
        raise ModelError(f"{path}: " + TERRATORCH_REFUSAL.format(factory=hparams.get("model_factory"),
                                                                 backbone=args.get("backbone")))
    if class_path is not None and class_path not in TASK_CLASS_PATHS:
        raise ModelError(f"{path}: a checkpoint of {class_path} (hyper_parameters._class_path), not of TorchGeo's "
                         "SemanticSegmentationTask")
    for key in ("weights", "encoder_weights"):
        if hparams.get(key) not in (None, False):
            raise ModelError(f"{path}: hyper_parameters.{key} is {hparams[key]!r}: building the network would "
                             "download these weights; TorchGeo 0.5 and later do not save them (the state dict "
                             "holds every weight): set it to None in the checkpoint or save it again")
    model = hparams.get("model")
    if model not in SEGMENTATION_MODELS or "backbone" not in hparams:
        raise ModelError(f"{path}: not a checkpoint of TorchGeo's SemanticSegmentationTask: hyper_parameters.model "
                         f"is {model!r} (expected one of {', '.join(SEGMENTATION_MODELS)}, with a backbone)")
    if hparams.get("task") == "multilabel":
        raise ModelError(f"{path}: a multilabel task (independent, overlapping labels) has no label map; geoseg "
                         "runs multiclass and binary segmentation tasks")


def load_torchgeo(path: Path, *, trust_pickle: bool = False) -> torch.nn.Module:
    """The network of the TorchGeo task checkpoint ``path``, built by TorchGeo from its
    hyper-parameters, with its trained weights.

    Raises:
        ModelError: the checkpoint is unreadable, a pickle without ``trust_pickle``, not a
            Lightning checkpoint, or refused by :func:`check_hyper_parameters`; torchgeo is
            missing; the hyper-parameters do not build a task; the weights do not fit it.
    """
    hparams, state = task_parts(read_checkpoint(path, trust_pickle=trust_pickle), path)
    check_hyper_parameters(hparams, path)
    trainers = import_vision("torchgeo.trainers", "torchgeo")
    torchgeo = import_vision("torchgeo", "torchgeo")
    try:
        task = trainers.SemanticSegmentationTask(**{k: v for k, v in hparams.items() if k != "_class_path"})
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"{path}: TorchGeo {torchgeo.__version__} cannot build its SemanticSegmentationTask from "
                         f"the checkpoint's hyper_parameters: {type(exc).__name__}: {first_line(exc)}") from exc
    load_weights(task, state, path)
    network: torch.nn.Module = task.model
    one_logit = (hparams.get("num_classes") or hparams.get("num_labels") or 1) == 1
    return BinaryAsTwoClasses(network) if hparams.get("task") == "binary" and one_logit else network


__all__ = ["BinaryAsTwoClasses", "check_hyper_parameters", "load_torchgeo", "task_parts"]
