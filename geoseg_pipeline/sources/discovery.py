"""Turn the workflow's input paths and globs into named items."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_MULTI_SUFFIXES = (".nii.gz", ".ome.zarr", ".tar.gz")


@dataclass(frozen=True)
class Item:
    """One input: its output name (file name without extensions) and its path."""

    name: str
    path: str


def item_name(path: str) -> str:
    """``/a/scene_01.tif`` -> ``scene_01``; ``ct.nii.gz`` -> ``ct``; ``mosaic.zarr`` -> ``mosaic``."""
    name = Path(path.rstrip("/")).name
    lower = name.lower()
    for suffix in _MULTI_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    stem = Path(name).stem
    return stem or name


def expand_inputs(patterns: Sequence[str]) -> tuple[list[Item], list[str]]:
    """Expand paths and globs in order, without duplicates.

    Returns:
        the items, and one message per pattern that matched nothing (a literal path that does
        not exist is still returned as an item, so that it fails as an item with its reason).
    """
    seen: set[str] = set()
    items: list[Item] = []
    unmatched: list[str] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                unmatched.append(f"{pattern}: matches no file")
        else:
            matches = [pattern]
        for m in matches:
            key = str(Path(m).resolve()) if Path(m).exists() else m
            if key in seen:
                continue
            seen.add(key)
            items.append(Item(item_name(m), m))
    return items, unmatched
