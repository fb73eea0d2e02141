"""Any network class by import path (``package.module:ClassName``); it runs that code, so the
workflow must opt in with ``trust_code: true``."""

from __future__ import annotations

import importlib
from typing import Any

import torch

from ..errors import ModelError


def build_python_model(import_path: str, args: dict[str, Any], *, trust_code: bool) -> torch.nn.Module:
    """Import ``package.module:ClassName`` (``ClassName`` may be dotted) and call it with ``args``.

    The module must be importable on every worker (installed, or on ``PYTHONPATH``).

    Raises:
        ModelError: ``trust_code`` is false; the module or class cannot be found; the call
            fails; the result is not a torch module.
    """
    if not trust_code:
        raise ModelError(f"model {import_path!r} is Python code: set model.trust_code: true to run it")
    module_name, _, qualname = import_path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"model.import_path {import_path!r}: cannot import {module_name!r} ({exc}); "
                         "it must be installed or on PYTHONPATH on every worker") from exc
    for part in qualname.split("."):
        if not hasattr(target, part):
            raise ModelError(f"model.import_path {import_path!r}: {module_name!r} has no {qualname!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ModelError(f"model.import_path {import_path!r} is an object of type {type(target).__name__}, not a class")
    try:
        model = target(**args)
    except Exception as exc:  # user code raises anything; name it
        raise ModelError(f"model.import_path {import_path!r}: calling it with model.args failed: "
                         f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"model.import_path {import_path!r} returned an object of type {type(model).__name__}, "
                         "not a torch module")
    return model
