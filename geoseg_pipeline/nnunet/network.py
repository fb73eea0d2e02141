"""The network of an nnU-Net v2 model folder, built as nnU-Net builds it (``get_network_from_plans``
from ``dynamic-network-architectures``, no deep supervision), one per fold, and the module that
runs them on a batch of windows as nnU-Net's predictor does: each fold's prediction averaged over
the mirrorings (``_internal_maybe_mirror_and_predict``), then the folds' mean.

Folds run in turn inside one actor on the same batch of windows (not one actor per fold): the
batch goes to the device once, and blending, stitching and export happen once for the ensemble
rather than once per fold, which by linearity equals nnU-Net's mean of the folds' blended logits.
"""

from __future__ import annotations

import itertools
import json
import pydoc
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelError, first_line
from ..inference.sources_checkpoint import archive_kind
from .folder import NnunetModel

#: Module prefixes a plans file may name as classes (the network's, its ops'); anything else is
#: code the workflow did not say it trusts.
TRUSTED_PREFIXES = ("dynamic_network_architectures.", "torch.nn.")


def _locate(name: str, what: str, folder: str, trust_code: bool) -> Any:
    if not trust_code and not name.startswith(TRUSTED_PREFIXES):
        raise ModelError(f"{folder}: plans.json names {what} {name!r} outside "
                         f"{', '.join(TRUSTED_PREFIXES)}; set model.trust_code: true if you trust that code")
    try:
        found = pydoc.locate(name)
    except pydoc.ErrorDuringImport as exc:
        cause = exc.value if isinstance(exc.value, BaseException) else exc
        raise ModelError(f"{folder}: cannot import {what} {name!r}: {cause}") from None
    if found is None:
        if name.startswith("dynamic_network_architectures."):
            try:
                import dynamic_network_architectures  # type: ignore[import-untyped]  # noqa: F401
            except ImportError:
                raise ModelError(f"{folder}: nnU-Net models need the dynamic-network-architectures package: "
                                 "pip install 'geoseg-pipeline[nnunet]'") from None
        raise ModelError(f"{folder}: plans.json names {what} {name!r}, which cannot be found")
    return found


def build_network(model: NnunetModel, trust_code: bool = False) -> torch.nn.Module:
    """The configuration's network with random weights (nnU-Net's ``get_network_from_plans``,
    ``deep_supervision=False``)."""
    kwargs = json.loads(model.arch_kwargs)
    for key in model.arch_requires_import:
        if kwargs.get(key) is not None:
            kwargs[key] = _locate(str(kwargs[key]), key, model.folder, trust_code)
    cls = _locate(model.network_class, "network class", model.folder, trust_code)
    if "deep_supervision" in _parameters(cls):
        kwargs["deep_supervision"] = False
    try:
        network: torch.nn.Module = cls(input_channels=len(model.channels), num_classes=model.heads, **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{model.folder}: cannot build {model.network_class} from plans.json: {exc}") from exc
    return network


def _parameters(cls: Any) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        return set()


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A fold checkpoint read as data only (``weights_only``; numpy scalars in its training log
    allowed as data).

    Raises:
        ModelError: unreadable, or not an nnU-Net checkpoint (no ``network_weights``).
    """
    safe: list[Any] = [np.dtype]
    core = getattr(np, "_core", None) or np.core
    safe.append(core.multiarray.scalar)
    safe.extend(type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool"))
    if path.is_file() and path.stat().st_size == 0:
        raise ModelError(f"{path}: the checkpoint file is empty")
    if path.is_file() and archive_kind(path) is None and not _legacy_pickle(path):  # torch.save writes zips
        raise ModelError(f"{path}: not a PyTorch checkpoint (not a torch.save archive: damaged or truncated, "
                         "or another kind of file)")
    try:
        with torch.serialization.safe_globals(safe):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise ModelError(f"{path}: not readable as a checkpoint of tensors ({first_line(exc)})") from exc
    if not isinstance(data, dict) or "network_weights" not in data:
        raise ModelError(f"{path}: not an nnU-Net checkpoint (no network_weights)")
    return data


def _legacy_pickle(path: Path) -> bool:
    """Whether ``path`` starts as a pickle does (``torch.save`` before torch 1.6)."""
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


class NnunetEnsemble(torch.nn.Module):
    """Maps ``(n, C, *roi)`` windows to the folds' mean of nnU-Net's mirrored prediction.

    A 2D configuration's windows are ``(n, C, 1, h, w)`` (one slice deep): the slice axis is
    dropped for the 2D networks and put back on their output.
    """

    def __init__(self, networks: list[torch.nn.Module], mirror_axes: tuple[int, ...] | None, two_d: bool) -> None:
        super().__init__()
        self.folds = torch.nn.ModuleList(networks)
        self.mirror_axes = tuple(mirror_axes) if mirror_axes else ()
        self.two_d = two_d

    def _mirrored(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        prediction: torch.Tensor = net(x)
        if not self.mirror_axes:
            return prediction
        axes = [m + 2 for m in self.mirror_axes]
        combos = [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
        for dims in combos:
            prediction = prediction + torch.flip(net(torch.flip(x, dims)), dims)
        return prediction / (len(combos) + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.two_d:
            x = x[:, :, 0]
        total: torch.Tensor | None = None
        for net in self.folds:
            y = self._mirrored(net, x)
            total = y if total is None else total + y
        assert total is not None
        if len(self.folds) > 1:
            total = total / len(self.folds)
        return total[:, :, None] if self.two_d else total


def load_ensemble(model: NnunetModel, device: torch.device, trust_code: bool = False) -> NnunetEnsemble:
    """Every chosen fold's network with its weights, in one :class:`NnunetEnsemble`.

    Raises:
        ModelError: a fold trained for another configuration, weights of another architecture
            (the first missing / unexpected / mis-shaped keys named), an unreadable checkpoint.
    """
    import importlib.util

    missing = [m for m in ("skimage", "dynamic_network_architectures") if importlib.util.find_spec(m) is None]
    if missing:  # scikit-image resamples the cases as nnU-Net does; checked before any data is read
        raise ModelError(f"{model.folder}: nnU-Net models need {' and '.join(missing)}: "
                         "pip install 'geoseg-pipeline[nnunet]'")
    networks = []
    mirror: tuple[int, ...] | None = None
    for i, fold in enumerate(model.folds):
        path = Path(model.folder) / f"fold_{fold}" / model.checkpoint
        ckpt = read_checkpoint(path)
        config = (ckpt.get("init_args") or {}).get("configuration")
        if config is not None and config != model.configuration:
            raise ModelError(f"{path}: trained for configuration {config!r}, the folder is {model.configuration!r}")
        if i == 0:
            axes = ckpt.get("inference_allowed_mirroring_axes")
            mirror = tuple(int(a) for a in axes) if axes is not None and model.mirroring else None
        net = build_network(model, trust_code)
        weights = ckpt["network_weights"]
        try:
            net.load_state_dict(weights)
        except RuntimeError as exc:
            lines = [ln.strip() for ln in str(exc).splitlines()[1:3]]
            raise ModelError(f"{path}: the weights do not fit {model.network_class} as the plans build it "
                             f"(a checkpoint of another architecture?): {' '.join(lines)[:300]}") from exc
        networks.append(net.to(device).eval())
    return NnunetEnsemble(networks, mirror, model.is_2d).to(device).eval()


__all__ = ["TRUSTED_PREFIXES", "NnunetEnsemble", "build_network", "load_ensemble", "read_checkpoint"]
