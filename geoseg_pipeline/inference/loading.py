"""Load a model from its spec, and probe it with one window before any data is read.

Model types: built-in demo models, TorchScript, ONNX (onnxruntime), MONAI networks by name,
MONAI bundles, Python classes by import path, nnU-Net folders, Hugging Face transformers
folders, segmentation_models_pytorch networks and TorchGeo task checkpoints (bundles, Python
classes and code shipped with a model run only when the workflow says ``trust_code: true``).
Checkpoints are read as tensors only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import ModelError, first_line
from ..spec import ModelSpec
from ..tasks import ModelInfo
from .onnx_model import OnnxModel
from .sources_checkpoint import archive_kind


def _builtin_landcover() -> torch.nn.Module:
    from ..models.landcover_demo import load_landcover_demo

    return load_landcover_demo()


def _builtin_ct() -> torch.nn.Module:
    from ..models.ct_demo import load_ct_demo

    return load_ct_demo()


#: Built-in models by name: a loader returning an eval-mode module.
BUILTIN_MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "landcover-demo": _builtin_landcover,
    "ct-demo": _builtin_ct,
}


def _load_builtin(spec: ModelSpec, device: torch.device) -> torch.nn.Module:
    name = spec.name or ""
    if name not in BUILTIN_MODELS:
        raise ModelError(f"unknown built-in model {name!r}; available: {', '.join(sorted(BUILTIN_MODELS))}")
    return BUILTIN_MODELS[name]()


def _load_torchscript(spec: ModelSpec, device: torch.device) -> torch.nn.Module:
    path = Path(spec.path or "")
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    try:
        model: torch.nn.Module = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
    except (RuntimeError, ValueError) as exc:
        hint = "; it looks like a torch.save checkpoint: use type monai or python with checkpoint" if (
            archive_kind(path) == "checkpoint") else ""
        raise ModelError(f"{path}: not a TorchScript model ({first_line(exc)}){hint}") from exc
    return model


def _load_monai(spec: ModelSpec, device: torch.device) -> torch.nn.Module:
    from .sources_checkpoint import load_checkpoint_into
    from .sources_monai import build_monai_network

    network = build_monai_network(spec.network or "", dict(spec.args or {}))
    return load_checkpoint_into(network, Path(spec.checkpoint or ""), trust_pickle=spec.trust_pickle)


def _load_bundle(spec: ModelSpec, device: torch.device) -> torch.nn.Module:
    from ..spec.bundle import bundle_weights_file
    from .bundle import bundle_network
    from .sources_checkpoint import load_checkpoint_into

    folder = Path(spec.bundle or "")
    network = bundle_network(folder, trust_code=spec.trust_code)
    weights = spec.checkpoint or bundle_weights_file(folder)
    return load_checkpoint_into(network, weights, trust_pickle=spec.trust_pickle)


def _load_python(spec: ModelSpec, device: torch.device) -> torch.nn.Module:
    from .sources_checkpoint import load_checkpoint_into
    from .sources_python import build_python_model

    model = build_python_model(spec.import_path or "", dict(spec.args or {}), trust_code=spec.trust_code)
    if spec.checkpoint is None:
        return model
    return load_checkpoint_into(model, spec.checkpoint, trust_pickle=spec.trust_pickle)


def _load_nnunet(spec: ModelSpec, device: torch.device) -> torch.nn.Module:
    from ..nnunet.folder import model_from_spec
    from ..nnunet.network import load_ensemble

    return load_ensemble(model_from_spec(spec), device, trust_code=spec.trust_code)


def _load_huggingface(spec: ModelSpec, device: torch.device) -> torch.nn.Module:
    from .sources_huggingface import load_huggingface

    return load_huggingface(Path(spec.path or ""), trust_code=spec.trust_code, trust_pickle=spec.trust_pickle,
                            text=spec.text_classes)


def _load_smp(spec: ModelSpec, device: torch.device) -> torch.nn.Module:
    from .sources_smp import load_smp

    return load_smp(spec.architecture or "", dict(spec.args or {}), Path(spec.checkpoint or ""),
                    trust_pickle=spec.trust_pickle)


def _load_torchgeo(spec: ModelSpec, device: torch.device) -> torch.nn.Module:
    from .sources_torchgeo import load_torchgeo

    return load_torchgeo(Path(spec.checkpoint or ""), trust_pickle=spec.trust_pickle)


_LOADERS: dict[str, Callable[[ModelSpec, torch.device], torch.nn.Module]] = {
    "builtin": _load_builtin,
    "torchscript": _load_torchscript,
    "monai": _load_monai,
    "bundle": _load_bundle,
    "python": _load_python,
    "nnunet": _load_nnunet,
    "huggingface": _load_huggingface,
    "smp": _load_smp,
    "torchgeo": _load_torchgeo,
}


def load_model(spec: ModelSpec, device: torch.device, threads: int | None = None) -> torch.nn.Module:
    """Load the model named by ``spec`` onto ``device`` in eval mode.

    ``threads`` sets onnxruntime's intra-op threads for ONNX models (torch's are set by the
    caller). An ONNX model is an :class:`~.onnx_model.OnnxModel`, a torch module without
    parameters.

    Raises:
        ModelError: unknown built-in; missing, empty, damaged or unreadable file (named); not
            TorchScript / ONNX; a checkpoint that is a pickled object without ``trust_pickle``,
            or whose keys or shapes do not fit the network; code refused without
            ``trust_code``; onnxruntime missing; an ONNX input geoseg cannot feed.
    """
    if spec.type == "onnx":
        return OnnxModel(Path(spec.path or ""), device, threads).eval()
    loader = _LOADERS.get(spec.type)
    if loader is None:
        raise ModelError(f"unknown model type {spec.type!r}")
    return loader(spec, device).to(device).eval()


def _first_conv(model: torch.nn.Module) -> torch.nn.modules.conv._ConvNd | None:
    return next((m for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)), None)


def first_conv_in_channels(model: torch.nn.Module) -> int | None:
    """Input channels the model declares: an ONNX input's fixed channels, else the first
    convolution's, else the first weight of rank >= 3 (a heuristic, for TorchScript)."""
    if isinstance(model, OnnxModel):
        return model.in_channels
    conv = _first_conv(model)
    if conv is not None:
        return int(conv.in_channels)
    for param in model.parameters():
        if param.dim() >= 3:
            return int(param.shape[1])
    return None


def _failure_hint(model: torch.nn.Module, in_channels: int, roi: tuple[int, ...], error: str) -> str:
    conv = _first_conv(model)
    if conv is not None:
        dims = len(conv.kernel_size)
        if dims != len(roi):
            return (f"; the model is {dims}D (its first convolution is {type(conv).__name__}) but "
                    f"tiling.roi_size {list(roi)} is {len(roi)}D")
        if conv.in_channels != in_channels:
            return (f"; the model takes {conv.in_channels} input channel(s) (its first convolution) but the "
                    f"workflow gives {in_channels} (model.in_channels / preprocessing.bands)")
    else:
        expected = first_conv_in_channels(model)
        if expected is not None and expected != in_channels:
            return f"; its first layer expects {expected} channels, the workflow gives {in_channels}"
    if "Sizes of tensors must match" in error or "size of tensor" in error:
        return "; the network may need every roi size to be a multiple of its total downsampling (e.g. 16 or 32)"
    return ""


def probe_model(
    model: torch.nn.Module, in_channels: int, roi: tuple[int, ...], device: torch.device, *, source: str | None = None
) -> ModelInfo:
    """Run one window of zeros through the model to learn its output classes.

    ``source`` (``ModelSpec.source``) names the model file or folder in the messages.

    Raises:
        ModelError: the model's input disagrees with ``in_channels`` or the roi's dims (both
            numbers named), it fails on the window, or it returns a shape that is not
            ``(1, classes, *roi)`` with two classes or more.
    """
    where = f"{source}: " if source else ""
    check_window = getattr(model, "check_window", None)  # ONNX and Hugging Face models know their limits
    if callable(check_window):
        check_window(in_channels, roi)
    x = torch.zeros((1, in_channels, *roi), dtype=torch.float32, device=device)
    try:
        with torch.inference_mode():
            y = model(x)
    except RuntimeError as exc:  # ModelError is one too (ONNX)
        first = first_line(exc)
        raise ModelError(
            f"{where}the model fails on a window of {in_channels} channel(s) and size {list(roi)}: "
            f"{first}{_failure_hint(model, in_channels, roi, str(exc))}"
        ) from exc
    if not isinstance(y, torch.Tensor) or y.dim() != len(roi) + 2 or tuple(y.shape[2:]) != roi or y.shape[0] != 1:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ModelError(
            f"{where}the model returned {shape} for a window of {(1, in_channels, *roi)}; "
            f"expected (1, classes, {', '.join(map(str, roi))})"
        )
    if y.shape[1] == 1:  # argmax over one class is class 0 everywhere: a map with nothing in it
        raise ModelError(
            f"{where}the model returns one channel: geoseg takes one logit per class and labels each pixel with "
            "the largest. A binary model with one logit z: return torch.cat([torch.zeros_like(z), z], dim=1) "
            "(class 1 where sigmoid(z) > 0.5); a TorchGeo binary task: model type torchgeo does this"
        )
    return ModelInfo(in_channels=in_channels, num_classes=int(y.shape[1]), spatial_dims=len(roi))
