"""Grids and windows: frozen value objects and pure functions, no I/O.

A :class:`Window` is an N-dimensional box on an item's pixel (or voxel) lattice given by its
start offsets and sizes, in array axis order (rows, cols) for rasters. A :class:`Grid` is the
lattice of one item with its georeferencing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from affine import Affine

_IDENTITY = Affine.identity()


@dataclass(frozen=True, order=True)
class Window:
    """An axis-aligned box ``[start, start + size)`` on a grid, one entry per spatial axis.

    Starts may be negative and boxes may reach past the grid: that is how padding is expressed.
    """

    start: tuple[int, ...]
    size: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.start) != len(self.size):
            raise ValueError(f"start {self.start} and size {self.size} differ in dimensions")
        if any(s < 0 for s in self.size):
            raise ValueError(f"window size must be >= 0, got {self.size}")

    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return len(self.start)

    @property
    def stop(self) -> tuple[int, ...]:
        """Exclusive end offsets."""
        return tuple(a + n for a, n in zip(self.start, self.size, strict=True))

    @property
    def count(self) -> int:
        """Number of pixels (voxels) in the window."""
        return math.prod(self.size)

    def slices(self, origin: Sequence[int] | None = None) -> tuple[slice, ...]:
        """Slices selecting this window in an array whose element 0 lies at ``origin``."""
        origin = origin if origin is not None else (0,) * self.ndim
        return tuple(slice(a - o, a - o + n) for a, o, n in zip(self.start, origin, self.size, strict=True))


def intersection(a: Window, b: Window) -> Window | None:
    """The overlap of two windows, or ``None`` when they do not overlap."""
    start = tuple(max(x, y) for x, y in zip(a.start, b.start, strict=True))
    stop = tuple(min(x, y) for x, y in zip(a.stop, b.stop, strict=True))
    if any(e <= s for s, e in zip(start, stop, strict=True)):
        return None
    return Window(start, tuple(e - s for s, e in zip(start, stop, strict=True)))


def union(windows: Sequence[Window]) -> Window:
    """The smallest window containing all ``windows``."""
    if not windows:
        raise ValueError("union of no windows")
    start = tuple(min(w.start[i] for w in windows) for i in range(windows[0].ndim))
    stop = tuple(max(w.stop[i] for w in windows) for i in range(windows[0].ndim))
    return Window(start, tuple(e - s for s, e in zip(start, stop, strict=True)))


def full_window(shape: Sequence[int]) -> Window:
    """The window covering a whole array of ``shape``."""
    return Window((0,) * len(shape), tuple(int(n) for n in shape))


@dataclass(frozen=True)
class Grid:
    """The pixel lattice of one 2D raster item with its georeferencing.

    ``transform`` maps (col, row) pixel corners to CRS coordinates, as in GDAL and rasterio.
    ``crs`` is a WKT string (``None`` when the item has none).
    """

    shape: tuple[int, int]
    transform: Affine = _IDENTITY
    crs: str | None = None

    @property
    def height(self) -> int:
        """Rows."""
        return self.shape[0]

    @property
    def width(self) -> int:
        """Columns."""
        return self.shape[1]

    @property
    def pixel_count(self) -> int:
        """Rows × columns."""
        return self.shape[0] * self.shape[1]
