"""``model.type: torchgeo``: TorchGeo SemanticSegmentationTask checkpoints written by a real
Lightning Trainer (small random-weight networks, one training step, offline), against TorchGeo's
own ``load_from_checkpoint`` and forward pass blended by MONAI's ``sliding_window_inference``;
checkpoints that are not such a task, TerraTorch's, pickles and weights that would download."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import pytest
import torch
from lightning.pytorch.cli import LightningCLI
from torch.utils.data import DataLoader
from torchgeo.trainers import SemanticSegmentationTask
from vision_models import assert_matches, monai_reference, run_job, scene

from geoseg_pipeline.api import model_section
from geoseg_pipeline.errors import ModelError
from geoseg_pipeline.inference.loading import load_model, probe_model
from geoseg_pipeline.spec import ModelSpec

CPU = torch.device("cpu")
TASKS: dict[str, dict[str, Any]] = {
    "unet": {"model": "unet", "backbone": "resnet18", "in_channels": 4, "num_classes": 3},
    "deeplabv3+": {"model": "deeplabv3+", "backbone": "resnet18", "in_channels": 4, "num_classes": 3},
    "fcn": {"model": "fcn", "backbone": "resnet18", "in_channels": 4, "num_classes": 3, "num_filters": 64,
            "class_weights": [1.0, 2.0, 0.5]},
}


def _batches(channels: int, classes: int) -> DataLoader[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    samples = [{"image": torch.randn(channels, 64, 64, generator=gen),
                "mask": torch.randint(0, max(classes, 2), (64, 64), generator=gen)} for _ in range(2)]
    return DataLoader(samples, batch_size=2)  # type: ignore[arg-type]


def train_checkpoint(tmp_path: Path, hparams: dict[str, Any], name: str = "task.ckpt") -> Path:
    """A checkpoint as training leaves it: TorchGeo's task, one Lightning training step on random
    data, ``trainer.save_checkpoint``."""
    torch.manual_seed(0)
    task = SemanticSegmentationTask(**hparams)
    trainer = lightning.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False,
                                num_sanity_val_steps=0, default_root_dir=tmp_path)
    batches = _batches(hparams["in_channels"], hparams.get("num_classes") or 1)
    with warnings.catch_warnings():  # Lightning's advice about data loader workers
        warnings.simplefilter("ignore")
        trainer.fit(task, train_dataloaders=batches, val_dataloaders=batches)  # val_loss: the LR scheduler's
    path = tmp_path / name
    trainer.save_checkpoint(path)
    return path


def train_with_cli(tmp_path: Path, init_args: dict[str, Any]) -> Path:
    """A checkpoint as ``torchgeo fit --config`` leaves it: the task built by LightningCLI (its
    hyper-parameters then hold ``_class_path`` and ``_instantiator``), one training step."""
    torch.manual_seed(0)
    trainer = {"accelerator": "cpu", "max_steps": 1, "logger": False, "enable_checkpointing": False,
               "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
               "default_root_dir": str(tmp_path)}
    batches = _batches(init_args["in_channels"], init_args["num_classes"])
    with warnings.catch_warnings():  # Lightning's advice about pytest's argv beside args, data loader workers
        warnings.simplefilter("ignore")
        cli = LightningCLI(lightning.LightningModule, subclass_mode_model=True, run=False, save_config_callback=None,
                           args={"model": {"class_path": "torchgeo.trainers.SemanticSegmentationTask",
                                           "init_args": init_args}, "trainer": trainer})
        cli.trainer.fit(cli.model, train_dataloaders=batches, val_dataloaders=batches)
    path = tmp_path / "cli.ckpt"
    cli.trainer.save_checkpoint(path)
    return path


def torchgeo_forward(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """TorchGeo's own task, loaded by Lightning from the checkpoint, in eval mode."""
    task = SemanticSegmentationTask.load_from_checkpoint(path, map_location="cpu").eval()
    return task  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", list(TASKS))
def test_a_job_equals_torchgeo_and_monai(tmp_path: Path, write_raster: Callable[..., Path], name: str) -> None:
    ckpt = train_checkpoint(tmp_path, TASKS[name])
    src, data = scene(write_raster, 4)
    section = model_section(str(ckpt))
    assert section == {"type": "torchgeo", "checkpoint": str(ckpt)}  # recognised as such
    logits, labels = run_job(tmp_path, src, section)
    assert_matches(logits, labels, monai_reference(torchgeo_forward(ckpt), data))


def test_a_binary_task_gives_background_and_foreground(tmp_path: Path, write_raster: Callable[..., Path]) -> None:
    ckpt = train_checkpoint(tmp_path, {"model": "fcn", "backbone": "resnet18", "in_channels": 4, "task": "binary",
                                       "loss": "bce", "num_filters": 64})
    src, data = scene(write_raster, 4)
    logits, labels = run_job(tmp_path, src, {"type": "torchgeo", "checkpoint": str(ckpt)})
    z = monai_reference(torchgeo_forward(ckpt), data)  # one logit per pixel
    assert z.shape[0] == 1 and logits.shape[0] == 2
    assert_matches(logits, labels, np.concatenate([np.zeros_like(z), z]))
    assert ((labels == 1) == (torch.sigmoid(torch.from_numpy(z[0])) > 0.5).numpy()).mean() >= 0.9999


def test_a_checkpoint_of_lightning_cli_loads(tmp_path: Path, write_raster: Callable[..., Path]) -> None:
    ckpt = train_with_cli(tmp_path, {"model": "fcn", "in_channels": 4, "num_classes": 3, "num_filters": 64})
    hparams = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    assert hparams["_class_path"] == "torchgeo.trainers.SemanticSegmentationTask" and "_instantiator" in hparams
    src, data = scene(write_raster, 4)
    logits, labels = run_job(tmp_path, src, {"type": "torchgeo", "checkpoint": str(ckpt)})
    assert_matches(logits, labels, monai_reference(torchgeo_forward(ckpt), data))
    # the class LightningCLI recorded decides
    with pytest.raises(ModelError, match=r"a checkpoint of torchgeo\.trainers\.ClassificationTask "
                                         r"\(hyper_parameters\._class_path\), not of TorchGeo's"):
        _load(_edited(ckpt, tmp_path / "cls.ckpt", _class_path="torchgeo.trainers.ClassificationTask"))
    with pytest.raises(ModelError, match=r"a TerraTorch task checkpoint"):
        _load(_edited(ckpt, tmp_path / "tt.ckpt", _class_path="terratorch.tasks.SemanticSegmentationTask"))


def _load(path: Path, **extra: Any) -> torch.nn.Module:
    return load_model(ModelSpec(type="torchgeo", checkpoint=path, **extra), CPU)


def _edited(path: Path, out: Path, **hparams: Any) -> Path:
    """The checkpoint at ``path`` with hyper-parameters changed (``None`` removes one)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"].update(hparams)
    checkpoint["hyper_parameters"] = {k: v for k, v in checkpoint["hyper_parameters"].items() if v is not None}
    torch.save(checkpoint, out)
    return out


def test_checkpoints_geoseg_cannot_build_offline_are_refused(tmp_path: Path) -> None:
    ckpt = train_checkpoint(tmp_path, TASKS["fcn"])
    with pytest.raises(ModelError, match=rf"{tmp_path / 'w.ckpt'}: hyper_parameters\.weights is True: building "
                                         r"the network would download"):
        _load(_edited(ckpt, tmp_path / "w.ckpt", weights=True))
    with pytest.raises(ModelError, match=r"not a checkpoint of TorchGeo's SemanticSegmentationTask: "
                                         r"hyper_parameters\.model is 'resnet50'"):
        _load(_edited(ckpt, tmp_path / "cls.ckpt", model="resnet50"))  # a ClassificationTask's
    with pytest.raises(ModelError, match=r"a multilabel task .* has no label map"):
        _load(_edited(ckpt, tmp_path / "ml.ckpt", task="multilabel", num_labels=3))
    with pytest.raises(ModelError, match=r"cannot build its SemanticSegmentationTask from the checkpoint's "
                                         r"hyper_parameters: TypeError: .*unexpected keyword argument 'wings'"):
        _load(_edited(ckpt, tmp_path / "kw.ckpt", wings=2))
    # weights of another network: the keys named
    with pytest.raises(ModelError, match=r"the checkpoint does not fit SemanticSegmentationTask: .*missing"):
        _load(_edited(ckpt, tmp_path / "unet.ckpt", model="unet"))
    # 3 bands given to a 4-channel task: both numbers named by the probe
    with pytest.raises(ModelError, match=r"takes 4 input channel\(s\) .* but the workflow gives 3"):
        probe_model(_load(ckpt), 3, (64, 64), CPU, source=str(ckpt))
    # a plain state dict is no task checkpoint
    plain = tmp_path / "plain.pt"
    torch.save(torch.load(ckpt, weights_only=True)["state_dict"], plain)
    with pytest.raises(ModelError, match=r"not a Lightning task checkpoint: it needs 'hyper_parameters' and "
                                         r"'state_dict'.*use model type smp or monai"):
        _load(plain)


def test_a_terratorch_checkpoint_is_refused_with_the_reason(tmp_path: Path) -> None:
    # what terratorch's SemanticSegmentationTask saves: model_args for its factory, the weights under model.
    ckpt = tmp_path / "prithvi.ckpt"
    torch.save({"state_dict": {"model.encoder.patch_embed.proj.weight": torch.zeros(8, 6, 1, 16, 16)},
                "hyper_parameters": {"model_factory": "EncoderDecoderFactory",
                                     "model_args": {"backbone": "prithvi_eo_v2_300", "decoder": "UperNetDecoder",
                                                    "backbone_pretrained": True, "num_classes": 4},
                                     "loss": "ce", "lr": 1e-4}}, ckpt)
    with pytest.raises(ModelError, match=r"a TerraTorch task checkpoint \(hyper_parameters model_factory "
                                         r"'EncoderDecoderFactory', backbone 'prithvi_eo_v2_300'\): not supported.*"
                                         r"use model type torchscript or onnx"):
        _load(ckpt)


def test_a_pickled_checkpoint_is_refused_unless_trusted(tmp_path: Path) -> None:
    ckpt = train_checkpoint(tmp_path, TASKS["fcn"])
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["class_weights"] = np.array([1.0, 2.0, 0.5])  # a pickled numpy array
    pickled = tmp_path / "pickled.ckpt"
    torch.save(checkpoint, pickled)
    with pytest.raises(ModelError, match=rf"{pickled} is a pickled model object.*trust_pickle"):
        _load(pickled)
    assert probe_model(_load(pickled, trust_pickle=True), 4, (64, 64), CPU).num_classes == 3
