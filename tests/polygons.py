"""What the polygon tests share: GDAL's polygonize of a whole map, the reference the polygon
outputs are compared with, and the comparison itself."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import shapely
from affine import Affine
from rasterio import features
from shapely.geometry import shape


def gdal_polygons(labels: np.ndarray, transform: Affine | None = None, nodata: int | None = 255,
                  connectivity: int = 4) -> list[tuple[int, Any]]:
    """``(class, polygon)`` of every region, from GDAL's polygonize of the whole map."""
    mask = None if nodata is None else labels != nodata
    return [(int(v), shape(g)) for g, v in features.shapes(labels, mask=mask, connectivity=connectivity,
                                                          transform=transform or Affine.identity())]


def _key(item: tuple[int, Any]) -> tuple[object, ...]:
    cls, geom = item
    return (cls, *np.round(shapely.bounds(geom), 3), round(shapely.area(geom), 3), shapely.get_num_coordinates(geom))


def assert_same_polygons(ours: Iterable[tuple[int, Any]], ref: Iterable[tuple[int, Any]], tolerance: float) -> None:
    """The same classes and polygons, vertex for vertex (coordinates within ``tolerance``)."""
    a = sorted(((int(c), shapely.normalize(g)) for c, g in ours), key=_key)
    b = sorted(((int(c), shapely.normalize(g)) for c, g in ref), key=_key)
    assert len(a) == len(b)
    for (c1, g1), (c2, g2) in zip(a, b, strict=True):
        assert c1 == c2 and g1.equals_exact(g2, tolerance=tolerance), (c1, g1.wkt[:200], g2.wkt[:200])
