"""The class legend every label output carries: names and colours, index = label value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ClassLegend:
    """Class names and ``#rrggbb`` colours, index = label value; optionally each class's DICOM
    codes (``ClassSpec.dicom``: a SEG segment's category and type; ``None`` where not given)."""

    names: tuple[str, ...]
    colours: tuple[str, ...]
    codes: tuple[Any, ...] | None = None

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """GDAL colour table entries."""
        return {
            i: (int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16), 255) for i, c in enumerate(self.colours)
        }


__all__ = ["ClassLegend"]
