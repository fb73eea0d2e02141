"""Load a model from its spec: built-in demo models and TorchScript files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import ModelError
from ..spec import ModelSpec
from ..tasks import ModelInfo


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


def load_model(spec: ModelSpec, device: torch.device) -> torch.nn.Module:
    """Load the model named by ``spec`` onto ``device`` in eval mode.

    Raises:
        ModelError: unknown built-in, missing or unreadable file, not TorchScript.
    """
    if spec.type == "builtin":
        name = spec.name or ""
        if name not in BUILTIN_MODELS:
            raise ModelError(f"unknown built-in model {name!r}; available: {', '.join(sorted(BUILTIN_MODELS))}")
        model = BUILTIN_MODELS[name]()
    else:
        path = Path(spec.path or "")
        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        try:
            model = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"{path}: not a TorchScript model ({str(exc).splitlines()[0]})") from exc
    return model.to(device).eval()


def first_conv_in_channels(model: torch.nn.Module) -> int | None:
    """Input channels of the first convolution weight, if the model has one (a heuristic)."""
    for param in model.parameters():
        if param.dim() >= 3:
            return int(param.shape[1])
    return None


def probe_model(model: torch.nn.Module, in_channels: int, roi: tuple[int, ...], device: torch.device) -> ModelInfo:
    """Run one window of zeros through the model to learn its output classes.

    Raises:
        ModelError: the model fails on ``in_channels`` or returns a shape that is not
            ``(1, classes, *roi)``.
    """
    x = torch.zeros((1, in_channels, *roi), dtype=torch.float32, device=device)
    try:
        with torch.inference_mode():
            y = model(x)
    except RuntimeError as exc:
        expected = first_conv_in_channels(model)
        hint = f" (its first layer expects {expected} channels)" if expected is not None else ""
        raise ModelError(
            f"the model fails on a window of {in_channels} channel(s) and size {list(roi)}{hint}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    if not isinstance(y, torch.Tensor) or y.dim() != len(roi) + 2 or tuple(y.shape[2:]) != roi or y.shape[0] != 1:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ModelError(
            f"the model returned {shape} for a window of {(1, in_channels, *roi)}; "
            f"expected (1, classes, {', '.join(map(str, roi))})"
        )
    return ModelInfo(in_channels=in_channels, num_classes=int(y.shape[1]), spatial_dims=len(roi))
