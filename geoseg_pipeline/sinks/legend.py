"""The class legend every label output carries: names and colours, index = label value."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Any

#: A qualitative palette (matplotlib's tab20, dark shades first): 20 distinct class colours.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)


def default_colours(count: int) -> tuple[str, ...]:
    """``count`` distinct ``#rrggbb`` colours: :data:`PALETTE`, then hues a golden angle apart
    (alternating lightness), so that no two classes share a colour."""
    out = list(PALETTE[:count])
    seen = set(out)
    i = 0
    while len(out) < count:
        hue = (i * 0.6180339887498949) % 1.0
        light = (0.45, 0.6, 0.35)[i % 3]
        r, g, b = colorsys.hls_to_rgb(hue, light, 0.75)
        colour = f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"
        i += 1
        if colour not in seen:
            seen.add(colour)
            out.append(colour)
    return tuple(out)


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


__all__ = ["PALETTE", "ClassLegend", "default_colours"]
