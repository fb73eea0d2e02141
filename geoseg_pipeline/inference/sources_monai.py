"""MONAI networks by class name: ``monai.networks.nets.<network>(**args)``."""

from __future__ import annotations

import difflib
import inspect
from typing import Any

import torch

from ..errors import ModelError


def monai_network_names() -> list[str]:
    """The classes of ``monai.networks.nets`` that are torch modules."""
    from monai.networks import nets

    return sorted(k for k, v in vars(nets).items() if inspect.isclass(v) and issubclass(v, torch.nn.Module))


def build_monai_network(network: str, args: dict[str, Any]) -> torch.nn.Module:
    """``monai.networks.nets.<network>(**args)``, looked up in that module only (untrained).

    Raises:
        ModelError: no such class (with the closest names), or the arguments do not fit it.
    """
    from monai.networks import nets

    cls = getattr(nets, network, None)
    if not (inspect.isclass(cls) and issubclass(cls, torch.nn.Module)):
        close = difflib.get_close_matches(network, monai_network_names(), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ModelError(f"{network!r} is not a network class of monai.networks.nets{hint}")
    try:
        model = cls(**args)
    except (TypeError, ValueError, AssertionError, KeyError, IndexError) as exc:
        raise ModelError(f"MONAI {network}({_call_args(args)}) cannot be built: {type(exc).__name__}: {exc}; "
                         "check model.args (or the bundle's network_def)") from exc
    return model


def _call_args(args: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return text if len(text) <= 200 else text[:197] + "..."
