"""Package exports imported when first used (PEP 562), so that a command that needs one light
module of a package (``geoseg change`` needs the COG sink, not the volume sinks' nibabel or the
spec's pydantic) does not pay for importing all of them."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``exports`` maps each exported name to the
    submodule (relative, ``.area``) that defines it; the first access imports it and keeps the
    value in the package's ``namespace``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    return __getattr__


__all__ = ["lazy_exports"]
