"""Checkpoints: read a state dict safely and load it into a network, saying what does not fit.

A checkpoint is read with ``torch.load(weights_only=True)``: tensors and plain containers only,
so a file cannot run code. A pickled model object (``torch.save(model)``) needs that code to
load; it is refused unless the workflow sets ``trust_pickle: true``.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError, first_line, ignoring_warnings

log = logging.getLogger("geoseg")

#: Keys under which training code nests the state dict, in the order they are tried.
NESTED_KEYS = ("state_dict", "model", "network", "model_state_dict")
#: Prefixes wrappers add to every key: DataParallel / DistributedDataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_SHOWN = 10


def read_checkpoint(path: Path, *, trust_pickle: bool = False) -> Any:
    """The object saved in ``path``, read on the CPU.

    Raises:
        ModelError: missing, empty, damaged or not a PyTorch file; a TorchScript archive; a
            pickled object (a whole model, or anything that would run code) without
            ``trust_pickle``.
    """
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint file not found")
    if archive_kind(path) == "torchscript":
        raise ModelError(f"{path}: is a TorchScript model, not a state dict: use type: torchscript with path")
    try:
        # a foreign pickle protocol warns before it is refused
        with ignoring_warnings((UserWarning, "Detected pickle protocol")):
            return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if trust_pickle:
            raise ModelError(f"{path}: cannot unpickle the checkpoint: {exc}") from exc
        raise ModelError(_refusal(path, str(exc))) from None
    except EOFError:
        raise ModelError(f"{path}: the checkpoint file is empty or truncated") from None
    except (RuntimeError, safetensors_error()) as exc:
        raise ModelError(f"{path}: not a readable PyTorch checkpoint (damaged or not saved with torch.save "
                         f"or safetensors): {first_line(exc)}") from None
    except (AttributeError, ImportError) as exc:  # trust_pickle: the pickled class cannot be found
        raise ModelError(f"{path}: the pickled model needs code that cannot be imported here: {exc}") from exc


def safetensors_error() -> type[Exception]:
    """What safetensors raises for a damaged file (``torch.load`` hands ``.safetensors`` files
    to it): a subclass of no built-in error but ``Exception``."""
    try:
        from safetensors import SafetensorError
    except ImportError:  # without safetensors torch reads no such file
        return RuntimeError
    return SafetensorError  # type: ignore[no-any-return]


def archive_kind(path: Path) -> str | None:
    """``"torchscript"`` or ``"checkpoint"`` for the zip archives torch writes, else None."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any(n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    return "checkpoint" if any(n.endswith("/data.pkl") for n in names) else None


def _refusal(path: Path, error: str) -> str:
    """Why ``weights_only`` refused ``path``: a pickled object, or not a checkpoint at all."""
    global_name = next((line.split("GLOBAL", 1)[1].split()[0] for line in error.splitlines() if "GLOBAL" in line), None)
    with path.open("rb") as stream:
        head = stream.read(2)
    if global_name is None and not head.startswith(b"\x80"):  # pickle protocol 2+ starts with PROTO
        return f"{path}: not a readable PyTorch checkpoint (damaged or not saved with torch.save)"
    needs = f" (it needs {global_name})" if global_name else ""
    return (
        f"{path} is a pickled model object, not a state dict{needs}; loading it would run arbitrary code: "
        "set model.trust_pickle: true only if you trust the file, or save a state dict "
        "(torch.save(model.state_dict(), path))"
    )


def _is_state_dict(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and bool(value)
        and all(isinstance(k, str) for k in value)
        and any(isinstance(v, torch.Tensor) for v in value.values())
    )


def state_dict_of(checkpoint: Any, path: Path) -> dict[str, Any]:
    """The state dict in a checkpoint: the checkpoint itself, one nested under
    :data:`NESTED_KEYS` (``{"state_dict": ...}``, ``{"model": ...}``, ...), or the state of a
    whole pickled module; :data:`WRAPPER_PREFIXES` removed when every key has one.

    Raises:
        ModelError: no state dict found (naming the top-level keys).
    """
    found: Any = checkpoint
    for _ in range(3):  # {"model": {"state_dict": ...}} at most
        if isinstance(found, torch.nn.Module):
            found = found.state_dict()
        if _is_state_dict(found) and not any(k in found and isinstance(found[k], Mapping) for k in NESTED_KEYS):
            break
        found = next((found[k] for k in NESTED_KEYS if isinstance(found, Mapping) and k in found), None)
        if found is None:
            break
    if not _is_state_dict(found):
        keys = sorted(map(str, checkpoint))[:_SHOWN] if isinstance(checkpoint, Mapping) else None
        what = f"its top-level keys are {keys}" if keys is not None else f"it holds a {type(checkpoint).__name__}"
        raise ModelError(f"{path}: no state dict found: {what}; expected a state dict, "
                         f"or one under {' / '.join(repr(k) for k in NESTED_KEYS)}")
    state = dict(found)
    for prefix in WRAPPER_PREFIXES:
        while state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _listed(keys: list[str]) -> str:
    more = f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def _strip_common_prefix(state: dict[str, Any], expected: set[str]) -> dict[str, Any]:
    """Lightning and friends save ``model.<key>``: drop a prefix all keys share when that makes
    the keys exactly the network's."""
    heads = {k.split(".", 1)[0] for k in state}
    if len(heads) == 1 and all("." in k for k in state):
        stripped = {k.split(".", 1)[1]: v for k, v in state.items()}
        if set(stripped) == expected:
            log.info("checkpoint keys carry the prefix %r; loading without it", f"{heads.pop()}.")
            return stripped
    return state


def load_weights(network: torch.nn.Module, state: dict[str, Any], path: Path) -> None:
    """Load ``state`` into ``network`` strictly.

    Raises:
        ModelError: missing or unexpected keys (counts and the first ten of each), or
            parameters whose shapes differ (name and both shapes).
    """
    expected = network.state_dict()
    state = _strip_common_prefix(state, set(expected)) if set(state) != set(expected) else state
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    kind = type(network).__name__
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} key(s) of {kind} missing from the checkpoint: {_listed(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) in the checkpoint: {_listed(unexpected)}")
        raise ModelError(f"{path}: the checkpoint does not fit {kind}: {'; '.join(parts)}. Was it saved from "
                         "this network with these arguments (model.network / model.args, or the bundle's "
                         "network_def)?")
    mismatched = [
        f"{k} is {tuple(state[k].shape)} in the checkpoint but {tuple(v.shape)} in {kind}"
        for k, v in expected.items()
        if isinstance(v, torch.Tensor) and isinstance(state[k], torch.Tensor) and state[k].shape != v.shape
    ]
    if mismatched:
        raise ModelError(f"{path}: {len(mismatched)} parameter(s) of the checkpoint differ in shape: "
                         f"{_listed(mismatched)}; check model.args (channels, classes, features)")
    network.load_state_dict(state, strict=True)


def load_checkpoint_into(network: torch.nn.Module, path: Path, *, trust_pickle: bool = False) -> torch.nn.Module:
    """Read ``path`` (see :func:`read_checkpoint`) and load its state dict into ``network``."""
    load_weights(network, state_dict_of(read_checkpoint(path, trust_pickle=trust_pickle), path), path)
    return network
