"""segmentation_models_pytorch networks by name (``model.type: smp``) and the lazy import of the
vision extra.

``architecture`` names a class of segmentation_models_pytorch (``Unet``, ``DeepLabV3Plus``,
``FPN``, ``Segformer``, ...; any case), built with ``args`` exactly as in training
(``encoder_name`` may be an smp encoder or a timm one, ``tu-<name>``), then the state dict of
``checkpoint`` is loaded strictly. ``encoder_weights`` is refused by the spec and passed as
``None``: smp would otherwise download the encoder's ImageNet weights, which the checkpoint
replaces anyway. A network built with ``aux_params`` (a classification head besides the masks)
gives its masks.

segmentation_models_pytorch, timm and TorchGeo are imported only when such a model is loaded:
they need torchvision, which is not part of the core install (see ``docs/models.md``).
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError, first_line
from .sources_checkpoint import load_checkpoint_into

INSTALL_HINT = ("pip install 'geoseg-pipeline[vision]' beside a torch and its matching torchvision "
                "(make install-vision builds .venv-vision)")


def import_vision(module: str, model_type: str) -> Any:
    """``module`` of the vision extra, imported now.

    Raises:
        ModelError: it (or torchvision under it) is missing or does not load, naming the extra.
    """
    try:
        return importlib.import_module(module)
    except (ImportError, RuntimeError) as exc:  # torchvision beside the wrong torch: RuntimeError
        package = module.split(".")[0]
        raise ModelError(f"model type {model_type} needs {package} ({first_line(exc)}): {INSTALL_HINT}") from exc


class MasksOnly(torch.nn.Module):
    """An smp network with a classification head (``aux_params``): its masks only."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The segmentation logits of a batch of windows."""
        masks, _labels = self.network(x)
        return masks  # type: ignore[no-any-return]


def smp_architectures(smp: Any) -> dict[str, type[torch.nn.Module]]:
    """The segmentation architectures of ``smp`` by class name."""
    base: Any = smp.base.SegmentationModel
    return {k: v for k, v in vars(smp).items() if isinstance(v, type) and issubclass(v, torch.nn.Module)
            and issubclass(v, base) and v is not base}


def build_smp_network(architecture: str, args: dict[str, Any]) -> torch.nn.Module:
    """``segmentation_models_pytorch.<architecture>(**args)`` with ``encoder_weights=None``
    (untrained; the name matched in any case).

    Raises:
        ModelError: smp missing; no such architecture (with the closest names); ``encoder_weights``
            set; the arguments do not fit it.
    """
    smp = import_vision("segmentation_models_pytorch", "smp")
    found = smp_architectures(smp)
    name = architecture.removeprefix("segmentation_models_pytorch.")
    cls = found.get(name) or {k.lower(): v for k, v in found.items()}.get(name.lower())
    if cls is None:
        close = difflib.get_close_matches(name, list(found), n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}?" if close else f"one of {', '.join(sorted(found))}"
        raise ModelError(f"{architecture!r} is not an architecture of segmentation_models_pytorch "
                         f"{smp.__version__}; {hint}")
    if args.get("encoder_weights") is not None:
        raise ModelError(f"model.args.encoder_weights is {args['encoder_weights']!r}: segmentation_models_pytorch "
                         "would download these weights; set encoder_weights: null")
    try:
        network: torch.nn.Module = cls(**{**args, "encoder_weights": None})
    except (TypeError, ValueError, KeyError, AssertionError, RuntimeError) as exc:
        text = ", ".join(f"{k}={v!r}" for k, v in args.items())
        raise ModelError(f"segmentation_models_pytorch {cls.__name__}({text}) cannot be built: "
                         f"{type(exc).__name__}: {first_line(exc)}; "
                         "check model.args") from exc
    return network


def load_smp(architecture: str, args: dict[str, Any], checkpoint: Path, *,
             trust_pickle: bool = False) -> torch.nn.Module:
    """The network of :func:`build_smp_network` with the state dict of ``checkpoint`` (see
    :func:`.sources_checkpoint.load_checkpoint_into`); its masks only when it has ``aux_params``."""
    network = load_checkpoint_into(build_smp_network(architecture, args), checkpoint, trust_pickle=trust_pickle)
    return MasksOnly(network) if args.get("aux_params") is not None else network


__all__ = ["INSTALL_HINT", "MasksOnly", "build_smp_network", "import_vision", "load_smp"]
