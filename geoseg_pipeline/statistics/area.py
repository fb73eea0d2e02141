"""Ground area of pixels.

* Projected CRS: every pixel is the same parallelogram, ``|det(transform)|`` in the CRS's
  linear unit squared, converted to m² (rotated and sheared transforms included).
* Geographic CRS with a north-up transform: a pixel's area depends only on its row; each row's
  area is the geodesic area of one pixel's quadrilateral on the CRS's ellipsoid (pyproj's
  ``Geod.polygon_area_perimeter``), computed once per row.
* No CRS, or a rotated geographic grid: no areas; ``note`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from affine import Affine
from rasterio.crs import CRS as RioCRS

from ..geometry import Grid

if TYPE_CHECKING:
    from pyproj import CRS, Geod


@dataclass(frozen=True)
class PixelAreas:
    """Area in m² of the pixels of each row (``None`` when areas cannot be computed)."""

    method: str
    row_area_m2: np.ndarray | None = field(default=None, compare=False)
    note: str = ""

    @property
    def available(self) -> bool:
        """Whether areas are known."""
        return self.row_area_m2 is not None


def _geodesic_row_areas(transform: Affine, rows: int, geod: Geod) -> np.ndarray:
    x0, dx, dy, y0 = transform.c, transform.a, transform.e, transform.f
    out = np.empty(rows, dtype=np.float64)
    for r in range(rows):
        top, bottom = y0 + r * dy, y0 + (r + 1) * dy
        lons = [x0, x0 + dx, x0 + dx, x0]
        lats = [top, top, bottom, bottom]
        area, _ = geod.polygon_area_perimeter(lons, lats)
        out[r] = abs(area)
    return out


def _geod(crs: CRS) -> Geod:
    geod = crs.get_geod()
    if geod is None:  # pragma: no cover - every geographic CRS has an ellipsoid
        raise ValueError(f"CRS {crs.name!r} has no ellipsoid")
    return geod


def pixel_areas(grid: Grid) -> PixelAreas:
    """How large each pixel of ``grid`` is on the ground."""
    if grid.crs is None:
        return PixelAreas("none", None, "the item has no CRS: pixel counts only, no areas")
    t = grid.transform
    projected = RioCRS.from_user_input(grid.crs)
    if projected.is_projected:  # GDAL answers this without importing pyproj (about 60 ms)
        unit = projected.linear_units_factor[1]
        area = abs(t.a * t.e - t.b * t.d) * unit * unit
        return PixelAreas("planar", np.full(grid.height, area), f"planar pixel area {area:.6g} m² from the transform")
    from pyproj import CRS

    crs = CRS.from_user_input(grid.crs)
    if crs.is_geographic:
        if t.b != 0 or t.d != 0:
            return PixelAreas(
                "none", None, "rotated geographic grid: per-pixel geodesic areas are not supported yet"
            )
        return PixelAreas("geodesic", _geodesic_row_areas(t, grid.height, _geod(crs)), "geodesic area per row on "
                          f"the {crs.ellipsoid.name if crs.ellipsoid else 'CRS'} ellipsoid")
    return PixelAreas("none", None, f"CRS {crs.name!r} is neither projected nor geographic: no areas")
