"""Small nnU-Net v2 trained model folders for tests, written as nnU-Net writes them (plans.json,
dataset.json, fold_<k>/checkpoint_final.pth with network_weights, init_args, trainer_name and
inference_allowed_mirroring_axes), with random weights from a fixed seed; the network is built by
dynamic-network-architectures from the plans, so nnU-Net's own predictor loads the same folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

#: A real MR volume (pyradiomics' breast1, anisotropic: nnU-Net resamples it with a separate z).
BREAST = Path(__file__).resolve().parent / "data" / "real" / "breast1_image.nii.gz"


def write_ct_volume(path: Path) -> Path:
    """A CT-like volume (air around a body with an organ and a lesion), anisotropic voxels."""
    rng = np.random.default_rng(0)
    vol = np.full((50, 44, 23), -1000.0, np.float32)
    vol[5:45, 6:40, 2:21] = rng.normal(40, 60, (40, 34, 19))
    vol[15:30, 15:30, 8:16] += 300
    vol[33:38, 20:26, 10:13] -= 250
    aff = np.diag([0.8, 0.9, 2.5, 1.0])
    aff[:3, 3] = (10, -20, 5)
    nib.save(nib.Nifti1Image(vol.astype(np.int16), aff), path)
    return path


def arch_3d(features: tuple[int, ...] = (4, 8, 16), dim: int = 3) -> dict[str, Any]:
    """A tiny PlainConvUNet architecture block of plans.json (``dim`` 2 or 3)."""
    n = len(features)
    k = [3] * dim
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": list(features),
            "conv_op": f"torch.nn.modules.conv.Conv{dim}d",
            "kernel_sizes": [k] * n,
            "strides": [[1] * dim] + [[2] * dim] * (n - 1),
            "n_conv_per_stage": [1] * n,
            "n_conv_per_stage_decoder": [1] * (n - 1),
            "conv_bias": True,
            "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dim}d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def configuration(patch: tuple[int, ...], spacing: tuple[float, ...], schemes: list[str],
                  mask_for_norm: list[bool] | None = None, features: tuple[int, ...] = (4, 8, 16),
                  **extra: Any) -> dict[str, Any]:
    """One configuration of plans.json."""
    return {
        "data_identifier": "nnUNetPlans_x", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": list(patch), "median_image_size_in_voxels": list(patch), "spacing": list(spacing),
        "normalization_schemes": schemes, "use_mask_for_norm": mask_for_norm or [False] * len(schemes),
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": arch_3d(features, len(patch)), "batch_dice": False, **extra,
    }


def write_model_folder(
    root: Path, *, configuration_name: str = "3d_fullres", patch: tuple[int, ...] = (16, 32, 32),
    spacing: tuple[float, ...] = (2.0, 1.0, 1.0), schemes: tuple[str, ...] = ("CTNormalization",),
    mask_for_norm: tuple[bool, ...] | None = None, labels: dict[str, Any] | None = None,
    regions_class_order: list[int] | None = None, folds: tuple[int, ...] = (0,), seed: int = 0,
    transpose_forward: tuple[int, int, int] = (0, 1, 2), reader: str = "SimpleITKIO",
    mirror_axes: tuple[int, ...] | None = (0, 1, 2), logit_scale: float = 1.0,
    extra_configurations: dict[str, Any] | None = None, features: tuple[int, ...] = (4, 8, 16),
) -> Path:
    """A trained-model folder ``root/nnUNetTrainer__nnUNetPlans__<configuration>`` with random
    weights; ``logit_scale`` multiplies the last layer (confident logits, as a trained model's)."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    labels = labels or {"background": 0, "organ": 1, "lesion": 2}
    folder = root / f"nnUNetTrainer__nnUNetPlans__{configuration_name}"
    folder.mkdir(parents=True, exist_ok=True)
    config = configuration(patch, spacing, list(schemes), list(mask_for_norm) if mask_for_norm else None, features)
    tb = tuple(int(np.argsort(transpose_forward)[i]) for i in range(3))
    plans = {
        "dataset_name": "Dataset999_Test", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing if len(spacing) == 3 else (1.0, *spacing)),
        "original_median_shape_after_transp": [64, 64, 64], "image_reader_writer": reader,
        "transpose_forward": list(transpose_forward), "transpose_backward": list(tb),
        "configurations": {configuration_name: config, **(extra_configurations or {})},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            str(c): {"max": 1500.0, "mean": 60.0 + 10 * c, "median": 55.0, "min": -1000.0,
                     "percentile_00_5": -900.0, "percentile_99_5": 1200.0, "std": 250.0}
            for c in range(len(schemes))
        },
    }
    dataset = {"channel_names": {str(c): ("CT" if s == "CTNormalization" else f"MR{c}") for c, s in enumerate(schemes)},
               "labels": labels, "numTraining": 4, "file_ending": ".nii.gz"}
    if regions_class_order is not None:
        dataset["regions_class_order"] = regions_class_order
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    heads = (len([k for k in labels if k not in ("background", "ignore")]) if regions_class_order is not None
             else len([k for k in labels if k != "ignore"]))
    arch = config["architecture"]["arch_kwargs"]
    import pydoc

    kwargs = {k: (pydoc.locate(v) if k in config["architecture"]["_kw_requires_import"] and v else v)
              for k, v in arch.items()}
    for fold in folds:
        torch.manual_seed(seed + fold)
        net = PlainConvUNet(input_channels=len(schemes), num_classes=heads, deep_supervision=False, **kwargs)
        with torch.no_grad():
            last = net.decoder.seg_layers[-1]
            last.weight.mul_(logit_scale)
            last.bias.mul_(logit_scale)
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save({
            "network_weights": net.state_dict(),
            "optimizer_state": {},
            "logging": {"mean_fg_dice": [np.float64(0.5)], "ema_fg_dice": [np.float64(0.5)]},
            "current_epoch": 1,
            "init_args": {"plans": plans, "configuration": configuration_name, "fold": fold,
                          "dataset_json": dataset, "device": torch.device("cpu")},
            "trainer_name": "nnUNetTrainer",
            "inference_allowed_mirroring_axes": mirror_axes,
        }, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def nnunet_predict(folder: Path, inputs: list[Path], out_dir: Path, folds: tuple[int, ...] | None = None,
                   mirroring: bool = True) -> list[Path]:
    """nnU-Net's own prediction (``nnUNetPredictor.predict_from_files_sequential``) of each
    single-channel input; returns the label files, in input order."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=folds, checkpoint_name="checkpoint_final.pth")
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = [out_dir / f"case{i}" for i in range(len(inputs))]
    predictor.predict_from_files_sequential([[str(p)] for p in inputs], [str(o) for o in outputs],
                                            save_probabilities=False, overwrite=True)
    return [Path(f"{o}.nii.gz") for o in outputs]
