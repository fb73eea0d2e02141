"""The items discovery finds (:class:`Item`, :class:`Inputs`), their names, and the checks every
input path gets before it is listed: an unknown URI scheme, a pipe or device instead of a file."""

from __future__ import annotations

import os
import stat
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..storage import unknown_scheme, uri_scheme
from .stac_items import StacItemRef

_MULTI_SUFFIXES = (".nii.gz", ".ome.zarr", ".tar.gz")


class Metadata(Mapping[str, str]):
    """An item's metadata (a manifest row's other columns): a read-only, hashable mapping."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        self._data: dict[str, str] = dict(data)

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._data.items())))

    def __repr__(self) -> str:
        return f"Metadata({self._data!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Metadata, (self._data,))


@dataclass(frozen=True)
class Item:
    """One input: its output name, its path (or URI), metadata from a manifest, and, for an
    input that cannot be an item (a bad manifest line, an unknown URI scheme), why. A STAC item
    (``inputs.stac``) also carries its resolved assets (``stac``).

    An item with an ``error`` is never opened: the driver records it as failed with that reason.
    """

    name: str
    path: str
    metadata: Metadata = field(default_factory=Metadata)
    error: str | None = None
    stac: StacItemRef | None = None


@dataclass(frozen=True)
class Inputs:
    """What discovery found: the items in order (failed ones included), and one message per
    pattern or folder that matched nothing."""

    items: tuple[Item, ...]
    unmatched: tuple[str, ...]

    @property
    def failed(self) -> tuple[Item, ...]:
        """The items that cannot be processed (``error`` set)."""
        return tuple(i for i in self.items if i.error is not None)

    def locations(self) -> list[str]:
        """Where the items' data lie: their paths, and their STAC assets' hrefs."""
        return [i.path for i in self.items] + [b.href for i in self.items if i.stac is not None for b in i.stac.assets]


def item_name(path: str) -> str:
    """``/a/scene_01.tif`` -> ``scene_01``; ``ct.nii.gz`` -> ``ct``; ``mosaic.zarr`` -> ``mosaic``."""
    name = Path(path.rstrip("/")).name
    lower = name.lower()
    for suffix in _MULTI_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    stem = Path(name).stem
    return stem or name


def not_a_file(path: str) -> str | None:
    """Why a local ``path`` cannot be an item's data: a named pipe, a device or a socket (reading
    a pipe waits for a writer that may never come); ``None`` for files, folders, URIs and paths
    that do not exist (those fail later with their own reason)."""
    if uri_scheme(path) is not None:
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"{path}: is {kind}, not a file or folder: geoseg reads files and folders only"


def unsupported_scheme(path: str) -> str | None:
    scheme = unknown_scheme(path)
    if scheme is None:
        return None
    return f"{path}: unsupported URI scheme {scheme}://; use a local path or s3://bucket/key"


def has_control(text: str) -> bool:
    """Whether ``text`` holds control (or other non-printing) characters."""
    return any(unicodedata.category(c).startswith("C") for c in text)


def bad_item_name(name: str) -> str | None:
    """Why ``name`` cannot be an item's output folder name; ``None`` when it can."""
    if name in (".", "..") or any(c in name for c in "/\\") or has_control(name):
        return f"item name {name!r} cannot be a folder name (no '/', '\\', '.', '..' or control characters)"
    return None


__all__ = ["Inputs", "Item", "Metadata", "bad_item_name", "has_control", "item_name", "not_a_file",
           "unsupported_scheme"]
