"""An nnU-Net v2 trained model folder, read without nnU-Net: what inference needs from its
``plans.json``, ``dataset.json`` and fold checkpoints, checked before any data is read.

A folder is ``<Trainer>__<Plans>__<configuration>/`` holding ``plans.json``, ``dataset.json``
and ``fold_<k>/<checkpoint>`` (``fold_all`` too). Torch-free: the driver reads it to plan; the
workers load the weights (:mod:`.network`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError

#: nnU-Net's ``ANISO_THRESHOLD``: an axis whose spacing is this many times the smallest is resampled apart.
ANISO_THRESHOLD = 3.0

#: Resampling functions of nnU-Net's planners that geoseg reproduces (``no_resampling_hack``: the
#: ``nnUNetPlannerNoResampling`` planners', which keep the cases' own spacing).
RESAMPLING_FUNCTIONS = ("resample_data_or_seg_to_shape", "resample_data_or_seg_to_spacing", "no_resampling_hack")

#: Normalization schemes (``normalization_schemes`` in the plans) that geoseg reproduces.
NORMALIZATIONS = ("ZScoreNormalization", "CTNormalization", "NoNormalization", "RescaleTo01Normalization",
                  "RGBTo01Normalization")

#: Image readers whose array and spacing conventions geoseg reproduces (all read a volume's voxel
#: axes reversed, spacing reversed); ``NibabelIOWithReorient`` reorients to RAS first.
READERS = ("SimpleITKIO", "NibabelIO", "NibabelIOWithReorient")

_FOLD = re.compile(r"^fold_(\d+|all)$")


@dataclass(frozen=True)
class Resampling:
    """One of nnU-Net's resampling settings (``resampling_fn_*_kwargs``): spline ``order``
    in-plane, ``order_z`` along an anisotropic axis, ``force_separate_z`` (``None``: decided
    from the spacings)."""

    order: int
    order_z: int
    force_separate_z: bool | None
    identity: bool = False  # no_resampling_hack: the array is left as it is


@dataclass(frozen=True)
class NnunetModel:
    """What inference needs from a trained model folder (one configuration, chosen folds).

    Spatial entries (``patch_size``, ``spacing``) are in nnU-Net's axis order after
    ``transpose_forward``; ``intensity`` holds each channel's foreground ``(mean, std,
    percentile_00_5, percentile_99_5)`` (CT normalization), ``labels`` the dataset's classes by
    value (a region model's ``regions`` give each head's label values).
    """

    folder: str
    configuration: str
    trainer: str
    folds: tuple[str, ...]
    checkpoint: str
    patch_size: tuple[int, ...]
    spacing: tuple[float, ...]
    transpose_forward: tuple[int, int, int]
    transpose_backward: tuple[int, int, int]
    channels: tuple[str, ...]
    normalization: tuple[str, ...]
    use_mask_for_norm: tuple[bool, ...]
    intensity: tuple[tuple[float, float, float, float] | None, ...]
    data_resampling: Resampling
    logits_resampling: Resampling
    reader: str
    labels: tuple[tuple[str, int], ...]
    regions: tuple[tuple[int, ...], ...] | None
    regions_class_order: tuple[int, ...] | None
    network_class: str
    arch_kwargs: str  # JSON, so that the value stays hashable
    arch_requires_import: tuple[str, ...]
    mirroring: bool = True

    @property
    def is_2d(self) -> bool:
        """A 2D configuration: the network runs on the slices along the first (transposed) axis."""
        return len(self.patch_size) == 2

    @property
    def roi_size(self) -> tuple[int, int, int]:
        """The window in the preprocessed volume: the patch, one slice deep for a 2D configuration."""
        p = self.patch_size
        return (1, p[0], p[1]) if len(p) == 2 else (p[0], p[1], p[2])

    @property
    def heads(self) -> int:
        """The network's output channels: one per region, else one per label."""
        return len(self.regions) if self.regions is not None else len(self.labels)

    @property
    def num_classes(self) -> int:
        """Label values the output can hold (the largest label + 1)."""
        return max(v for _, v in self.labels) + 1

    @property
    def label_names(self) -> tuple[str, ...]:
        """Class names by label value (``class_<v>`` for a value the dataset does not name)."""
        by_value = {v: n for n, v in self.labels}
        return tuple(by_value.get(v, f"class_{v}") for v in range(self.num_classes))


def is_nnunet_folder(path: str | Path) -> bool:
    """Whether ``path`` looks like an nnU-Net trained model folder (plans, dataset, a fold)."""
    p = Path(path)
    return p.is_dir() and (p / "plans.json").is_file() and (p / "dataset.json").is_file() and any(
        _FOLD.match(c.name) for c in p.iterdir() if c.is_dir())


def available_folds(folder: Path, checkpoint: str) -> tuple[str, ...]:
    """The folds holding ``checkpoint``, as nnU-Net finds them (``fold_all`` left out)."""
    found = []
    for child in folder.iterdir():
        m = _FOLD.match(child.name)
        if m and m.group(1) != "all" and (child / checkpoint).is_file():
            found.append(int(m.group(1)))
    return tuple(str(f) for f in sorted(found))


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelError(f"{path.parent}: not an nnU-Net model folder: {path.name} is missing")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def _configuration(plans: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    """The configuration with its ``inherits_from`` resolved (as nnU-Net's PlansManager)."""
    configs = plans.get("configurations") or {}
    seen: list[str] = []
    chain = []
    current: str | None = name
    while current is not None:
        if current not in configs:
            raise ModelError(f"{path}: configuration {current!r} does not exist in plans.json "
                             + (f"(it has {', '.join(sorted(configs))})" if configs
                                else "(it has no configurations: is it an nnU-Net v2 plans.json?)"))
        if current in seen:
            raise ModelError(f"{path}: circular inherits_from in plans.json: {' -> '.join([*seen, current])}")
        seen.append(current)
        chain.append(configs[current])
        current = configs[current].get("inherits_from")
    out: dict[str, Any] = {}
    for part in reversed(chain):
        out.update(part)
    return out


def _architecture(config: dict[str, Any], path: Path) -> tuple[str, dict[str, Any], tuple[str, ...]]:
    """Network class, its keyword arguments and those naming classes; older plans without
    ``architecture`` converted as nnU-Net's ConfigurationManager does."""
    arch = config.get("architecture")
    if arch is not None:
        return arch["network_class_name"], dict(arch["arch_kwargs"]), tuple(arch.get("_kw_requires_import", ()))
    name = config.get("UNet_class_name")
    classes = {"PlainConvUNet": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
               "ResidualEncoderUNet": "dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet"}
    if name not in classes:
        raise ModelError(f"{path}: old-style plans with UNet_class_name {name!r}: only PlainConvUNet and "
                         "ResidualEncoderUNet can be rebuilt (as nnU-Net itself)")
    stages = len(config["n_conv_per_stage_encoder"])
    dim = len(config["patch_size"])
    kwargs = {
        "n_stages": stages,
        "features_per_stage": [min(config["UNet_base_num_features"] * 2**i, config["unet_max_num_features"])
                               for i in range(stages)],
        "conv_op": f"torch.nn.modules.conv.Conv{dim}d",
        "kernel_sizes": config["conv_kernel_sizes"],
        "strides": config["pool_op_kernel_sizes"],
        ("n_conv_per_stage" if name == "PlainConvUNet" else "n_blocks_per_stage"): config["n_conv_per_stage_encoder"],
        "n_conv_per_stage_decoder": config["n_conv_per_stage_decoder"],
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dim}d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    return classes[name], kwargs, ("conv_op", "norm_op", "dropout_op", "nonlin")


def _resampling(config: dict[str, Any], which: str, path: Path) -> Resampling:
    fn = config.get(f"resampling_fn_{which}")
    if fn not in RESAMPLING_FUNCTIONS:
        raise ModelError(f"{path}: resampling_fn_{which} {fn!r} is not reproduced by geoseg "
                         f"(it reproduces {', '.join(RESAMPLING_FUNCTIONS)})")
    kw = config.get(f"resampling_fn_{which}_kwargs") or {}
    return Resampling(int(kw.get("order", 3 if which == "data" else 1)), int(kw.get("order_z", 0)),
                      kw.get("force_separate_z"), identity=fn == "no_resampling_hack")


def _labels(dataset: dict[str, Any], path: Path) -> tuple[tuple[tuple[str, int], ...],
                                                          tuple[tuple[int, ...], ...] | None,
                                                          tuple[int, ...] | None]:
    raw = dataset.get("labels")
    if not isinstance(raw, dict) or raw.get("background") != 0:
        raise ModelError(f"{path}: dataset.json needs labels with background: 0")
    regions = any(isinstance(v, (list, tuple)) and len(v) > 1 for v in raw.values())
    labels: list[tuple[str, int]] = []
    heads: list[tuple[int, ...]] = []
    for name, value in raw.items():
        if name == "ignore":
            continue
        values = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)
        if regions:
            if name != "background":
                heads.append(values)
        else:
            labels.append((name, values[0]))
    if not regions:
        found = sorted(v for _, v in labels)
        if found != list(range(len(found))):  # nnU-Net's argmax index is the label
            raise ModelError(f"{path}: dataset.json labels must be consecutive from 0, got {found}")
        return tuple(sorted(labels, key=lambda x: x[1])), None, None
    order = dataset.get("regions_class_order")
    if not isinstance(order, list) or len(order) != len(heads):
        raise ModelError(f"{path}: a region-based dataset.json needs regions_class_order with one entry per region")
    named = [("background", 0)] + [(n, int(c)) for (n, _), c in zip(
        [(n, v) for n, v in raw.items() if n not in ("background", "ignore")], order, strict=True)]
    return tuple(sorted(set(named), key=lambda x: x[1])), tuple(heads), tuple(int(c) for c in order)


def read_model_folder(folder: str | Path, folds: tuple[str, ...] | None = None,
                      checkpoint: str = "checkpoint_final.pth", configuration: str | None = None,
                      mirroring: bool = True) -> NnunetModel:
    """Read and check a trained model folder.

    ``folds``: ``None`` takes every fold holding ``checkpoint`` (as nnU-Net). ``configuration``
    defaults to the folder name's last part (``Trainer__Plans__3d_fullres``).

    Raises:
        ModelError: a missing plans.json / dataset.json / fold / checkpoint, an unknown
            configuration, a cascade stage, a scheme, reader or resampling geoseg does not
            reproduce (each naming the file).
    """
    path = Path(folder)
    if not path.is_dir():
        raise ModelError(f"{path}: nnU-Net model folder not found")
    plans = _json(path / "plans.json")
    dataset = _json(path / "dataset.json")
    parts = path.name.split("__")
    trainer = parts[0] if len(parts) == 3 else "nnUNetTrainer"
    name = configuration or (parts[2] if len(parts) == 3 else None)
    if name is None:
        raise ModelError(f"{path}: cannot tell the configuration: the folder is not named "
                         "<Trainer>__<Plans>__<configuration> (set model.configuration)")
    config = _configuration(plans, name, path / "plans.json")
    if config.get("previous_stage"):
        raise ModelError(f"{path}: configuration {name!r} is a cascade stage: it needs the segmentation of "
                         f"{config['previous_stage']!r} as input, which geoseg does not run; use 3d_fullres or "
                         "3d_lowres")
    chosen = available_folds(path, checkpoint) if folds is None else tuple(folds)
    if not chosen:
        raise ModelError(f"{path}: no fold_<k>/{checkpoint} found")
    for f in chosen:
        if not (path / f"fold_{f}" / checkpoint).is_file():
            raise ModelError(f"{path}: fold {f} has no {checkpoint} (fold_{f}/{checkpoint} is missing)")
    channels_raw = dataset.get("channel_names") or dataset.get("modality")
    if not isinstance(channels_raw, dict) or not channels_raw:
        raise ModelError(f"{path / 'dataset.json'}: channel_names is missing")
    channels = tuple(str(channels_raw[k]) for k in sorted(channels_raw, key=int))
    schemes = tuple(config.get("normalization_schemes") or ())
    if len(schemes) != len(channels):
        raise ModelError(f"{path}: plans give {len(schemes)} normalization scheme(s) for {len(channels)} channel(s)")
    for s in schemes:
        if s not in NORMALIZATIONS:
            raise ModelError(f"{path}: normalization {s!r} is not reproduced by geoseg ({', '.join(NORMALIZATIONS)})")
    reader = str(plans.get("image_reader_writer", "SimpleITKIO"))
    if reader not in READERS:
        raise ModelError(f"{path}: image_reader_writer {reader!r}: geoseg reads volumes as {', '.join(READERS)}")
    props = plans.get("foreground_intensity_properties_per_channel") or plans.get(
        "foreground_intensity_properties_by_modality") or {}
    intensity: list[tuple[float, float, float, float] | None] = []
    for c, scheme in enumerate(schemes):
        p = props.get(str(c))
        if p is None:
            if scheme == "CTNormalization":
                raise ModelError(f"{path}: CT normalization of channel {c} needs its foreground intensity "
                                 "properties in plans.json")
            intensity.append(None)
        else:
            intensity.append((float(p["mean"]), float(p["std"]), float(p["percentile_00_5"]),
                              float(p["percentile_99_5"])))
    cls, kwargs, imports = _architecture(config, path / "plans.json")
    labels, regions, order = _labels(dataset, path / "dataset.json")
    tf, tb = plans.get("transpose_forward", [0, 1, 2]), plans.get("transpose_backward", [0, 1, 2])
    return NnunetModel(
        folder=str(path), configuration=name, trainer=trainer, folds=chosen, checkpoint=checkpoint,
        patch_size=tuple(int(v) for v in config["patch_size"]), spacing=tuple(float(v) for v in config["spacing"]),
        transpose_forward=(int(tf[0]), int(tf[1]), int(tf[2])), transpose_backward=(int(tb[0]), int(tb[1]), int(tb[2])),
        channels=channels, normalization=schemes,
        use_mask_for_norm=tuple(bool(v) for v in config.get("use_mask_for_norm", [False] * len(schemes))),
        intensity=tuple(intensity), data_resampling=_resampling(config, "data", path),
        logits_resampling=_resampling(config, "probabilities", path), reader=reader, labels=labels,
        regions=regions, regions_class_order=order, network_class=cls,
        arch_kwargs=json.dumps(kwargs, sort_keys=True), arch_requires_import=imports, mirroring=mirroring,
    )


def model_from_spec(spec: Any) -> NnunetModel:
    """The nnU-Net model a workflow's ``model`` section (``type: nnunet``) names, read and checked."""
    return read_model_folder(spec.path, spec.folds, str(spec.checkpoint or "checkpoint_final.pth"),
                             spec.configuration, spec.mirroring)


__all__ = ["ANISO_THRESHOLD", "NnunetModel", "Resampling", "available_folds", "is_nnunet_folder",
           "model_from_spec", "read_model_folder"]
