"""MONAI bundles: the network from ``configs/inference.json`` (or ``.yaml``), vetted and built.

Reading a bundle runs no code: ``@`` references and ``$`` values that are plain literals
(``"$@roi"``, ``"$[96, 96, 96]"``) are resolved (:mod:`geoseg_pipeline.spec.bundle`); any other
``$`` expression is refused, and a ``_target_`` must name a class of ``monai.networks.nets``.
``trust_code`` hands the network definition to MONAI's ``ConfigParser``, which then may import
and evaluate anything. The config and the workflow defaults a bundle declares are read by
:mod:`geoseg_pipeline.spec.bundle` (torch-free); this module builds the network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelError
from ..spec.bundle import (
    META_KEYS,
    MONAI_NETS,
    SEP,
    ConfigReader,
    Unreadable,
    bundle_config_file,
)

if TYPE_CHECKING:
    import torch


# -- the network -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkDef:
    """A safe ``network_def``: a class of ``monai.networks.nets`` and its resolved arguments
    (plain data; an argument that is itself a network is a nested :class:`NetworkDef`)."""

    name: str
    args: dict[str, Any]


def _net_class_name(target: str) -> str | None:
    """``UNet`` or ``monai.networks.nets[.module].UNet`` -> ``UNet``; anything else -> None."""
    if "." not in target:
        return target
    if target.startswith(MONAI_NETS + "."):
        return target.rsplit(".", 1)[-1]
    return None


def network_definition(config: Mapping[str, Any], where: str | Path) -> NetworkDef:
    """The bundle's ``network_def``, resolved and vetted without running code.

    Raises:
        ModelError: no ``network_def``; a ``$`` expression (other than a reference or a plain
            literal), a macro, or a ``_target_`` outside ``monai.networks.nets`` in it.
    """
    if "network_def" not in config:
        raise ModelError(f"{where}: the bundle config has no network_def")
    try:
        _refuse_requires(config["network_def"], "network_def")
        resolved = ConfigReader(config).value("network_def")
        if not isinstance(resolved, dict) or "_target_" not in resolved:
            raise ModelError(f"{where}: network_def must be a component with a _target_, got {resolved!r}")
        return _as_definition(resolved, "network_def")
    except Unreadable as exc:
        raise ModelError(f"{where}: {exc}; set model.trust_code: true to let the bundle run code, "
                         "only if you trust it") from None


def _refuse_requires(node: Any, ref: str) -> None:
    """``_requires_`` makes MONAI evaluate other items first: refused before anything is followed."""
    if isinstance(node, Mapping):
        if "_requires_" in node:
            raise Unreadable(f"{ref} uses _requires_, which MONAI evaluates")
        for k, v in node.items():
            _refuse_requires(v, f"{ref}{SEP}{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _refuse_requires(v, f"{ref}{SEP}{i}")


def _as_definition(node: dict[str, Any], ref: str) -> NetworkDef:
    target = node["_target_"]
    name = _net_class_name(target) if isinstance(target, str) else None
    if name is None:
        raise Unreadable(f"{ref} has _target_ {target!r}, not a class of {MONAI_NETS}")
    unknown = sorted(k for k in node if k.startswith("_") and k.endswith("_") and k not in META_KEYS)
    if unknown or node.get("_mode_", "default") != "default":
        raise Unreadable(f"{ref} uses {unknown or ['_mode_']}, which MONAI evaluates")
    if node.get("_disabled_") not in (None, False):
        raise Unreadable(f"{ref} is _disabled_")
    args = {k: _as_argument(v, f"{ref}{SEP}{k}") for k, v in node.items() if k not in META_KEYS}
    return NetworkDef(name, args)


def _as_argument(value: Any, ref: str) -> Any:
    if isinstance(value, dict):
        if "_target_" in value:
            return _as_definition(value, ref)
        return {k: _as_argument(v, f"{ref}{SEP}{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_as_argument(v, f"{ref}{SEP}{i}") for i, v in enumerate(value)]
    return value


def bundle_network(bundle_dir: str | Path, *, trust_code: bool = False) -> torch.nn.Module:
    """Build the bundle's ``network_def`` (untrained; the caller loads the weights).

    Without ``trust_code`` the definition is read by MONAI's ``ConfigParser`` (macros and
    relative ids resolved) and then vetted by :func:`network_definition`; with it,
    ``ConfigParser`` instantiates ``network_def`` itself, evaluating whatever it holds.

    Raises:
        ModelError: no config or ``network_def``, code refused, or the network cannot be built.
    """
    import torch
    from monai.bundle.config_parser import ConfigParser

    from .sources_monai import build_monai_network

    config_file = bundle_config_file(bundle_dir)
    parser = ConfigParser(globals=None if trust_code else False)
    try:
        parser.read_config(str(config_file))
        if trust_code:
            network = parser.get_parsed_content("network_def")
        else:
            parser.resolve_macro_and_relative_ids()  # type: ignore[no-untyped-call]
            network = _instantiate(network_definition(parser.get(), config_file), build_monai_network)
    except ModelError as exc:
        if str(config_file) in str(exc):
            raise
        raise ModelError(f"{config_file}: {exc}") from exc
    except Exception as exc:  # MONAI and user code raise anything; name the file
        raise ModelError(f"{config_file}: cannot build network_def: {type(exc).__name__}: {exc}") from exc
    if not isinstance(network, torch.nn.Module):
        raise ModelError(f"{config_file}: network_def built an object of type {type(network).__name__}, "
                         "not a torch module")
    return network


def _instantiate(definition: NetworkDef, build: Callable[[str, dict[str, Any]], Any]) -> Any:
    def argument(value: Any) -> Any:
        if isinstance(value, NetworkDef):
            return _instantiate(value, build)
        if isinstance(value, dict):
            return {k: argument(v) for k, v in value.items()}
        if isinstance(value, list):
            return [argument(v) for v in value]
        return value

    return build(definition.name, {k: argument(v) for k, v in definition.args.items()})
