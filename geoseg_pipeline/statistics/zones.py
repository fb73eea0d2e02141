"""Class areas per zone (districts, parcels, watersheds) of a raster item, counted while its map is
stitched.

* **Which pixels are in a zone**: those whose *centre* lies inside the zone's polygon, as GDAL
  rasterizes (``all_touched`` off). A pixel on a zone border counts for one side only; a pixel
  in two overlapping zones counts for both. Partial pixels are not weighted.
* **Zones in any CRS**: read once through OGR (any vector format pyogrio opens). In the item's
  CRS a zone is burnt as GDAL rasterizes. In another CRS it is burnt after reprojection (edges
  densified), and the pixels within a pixel of its reprojected border are decided exactly: their
  centres are projected into the zones' CRS (pyproj) and tested there (shapely). So zones that
  share an edge still meet exactly, and a pixel centre is in at most one of them.
* **Areas** are those of the item's statistics (:mod:`.area`: planar, or geodesic per row).
* **Scenes that overlap**: each item also counts, per zone and class, the pixels that no item
  earlier in the job (by name) covers (:attr:`ZoneStats.own_pixels`): the job's
  ``zones_summary.csv`` adds up only those, so a ground pixel covered by two scenes is counted
  once, for the first. "Covers" is the earlier scene's grid extent: nodata inside an earlier
  scene's extent (a Landsat collar) is not filled in from a later one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from pyproj import CRS, Transformer
from rasterio import features

from ..errors import InputDataError
from ..geometry import Grid, Window
from ..stitching.consumer import LabelBlock

INSTALL_HINT = "statistics.zones needs the vector extra: pip install 'geoseg-pipeline[vector]'"
#: Densify zone edges to this many points per edge before reprojecting (at most).
_DENSIFY = 64


@dataclass(frozen=True)
class ZoneStats:
    """One class in one zone of one item. ``share`` is of the zone's valid area (its valid
    pixels without areas); ``own_*`` count only pixels no earlier item of the job covers."""

    zone: str
    class_index: int
    class_name: str
    pixels: int
    area_m2: float | None
    share: float
    own_pixels: int
    own_area_m2: float | None

    @property
    def area_ha(self) -> float | None:
        """Area in hectares."""
        return None if self.area_m2 is None else self.area_m2 / 10_000.0


@dataclass(frozen=True)
class ZoneLayer:
    """The zones of a job: ids and polygons (shapely) in ``crs`` (WKT; ``None``: unknown)."""

    source: str
    ids: tuple[str, ...]
    geometries: Any
    crs: str | None


@dataclass(frozen=True)
class Footprint:
    """Where an item lies: its grid's extent as a polygon (shapely) in its CRS (WKT)."""

    polygon: Any
    crs: str | None
    #: the extent's bounds in lon/lat (west, south, east, north), to tell cheaply which overlap
    lonlat: tuple[float, float, float, float] | None = None

    @classmethod
    def of(cls, grid: Grid) -> Footprint:
        """The extent of ``grid``."""
        import shapely

        h, w = grid.shape
        corners = [grid.transform * xy for xy in ((0, 0), (w, 0), (w, h), (0, h))]
        polygon = shapely.Polygon(corners)
        lonlat = None
        if grid.crs is not None:
            to_ll = Transformer.from_crs(CRS.from_user_input(grid.crs), 4326, always_xy=True)
            left, bottom, right, top = polygon.bounds
            lonlat = to_ll.transform_bounds(left, bottom, right, top, densify_pts=21)
        return cls(polygon, grid.crs, lonlat)

    def may_overlap(self, other: Footprint) -> bool:
        """Whether the two extents can overlap (their lon/lat bounds do, or one is unknown)."""
        a, b = self.lonlat, other.lonlat
        if a is None or b is None or a[0] > a[2] or b[0] > b[2]:  # unknown, or across the antimeridian
            return True
        return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


@dataclass(frozen=True)
class ItemZones:
    """What an item needs to count its zones: the job's zones and the footprints of the items
    before it in the job."""

    layer: ZoneLayer
    earlier: tuple[Footprint, ...] = ()


def read_zones(path: str | Path, id_field: str, layer: str | None = None) -> ZoneLayer:
    """Read a zone layer (polygons with an id field) through OGR.

    Raises:
        InputDataError: the file cannot be read, the field does not exist, the layer is empty,
            a zone has no id or is not a polygon, two zones share an id, or the layer has no CRS (each names the
            file).
    """
    try:
        import shapely
        from pyogrio import list_layers, read_info
        from pyogrio.errors import DataLayerError, DataSourceError
        from pyogrio.raw import read
    except ImportError as exc:
        raise InputDataError(f"{INSTALL_HINT} ({exc})") from exc
    where = f"statistics.zones: {path}"
    try:
        if layer is None and len(list_layers(path)) > 1:
            names = [str(n) for n, _ in list_layers(path)]
            raise InputDataError(f"{where}: holds the layers {names}; name one with statistics.zones.layer")
        fields = [str(f) for f in read_info(path, layer=layer)["fields"]]
        if id_field not in fields:
            raise InputDataError(f"{where}: no field {id_field!r}; the fields are {fields}")
        meta, _, wkb, values = read(path, layer=layer, columns=[id_field])
    except (DataSourceError, DataLayerError, OSError) as exc:
        raise InputDataError(f"{where}: cannot read the zones: {exc}") from exc
    if len(wkb) == 0:
        raise InputDataError(f"{where}: the layer holds no features: no zone to count in (the wrong layer or an "
                             "empty export?)")
    geoms = shapely.from_wkb(wkb)
    ids = tuple("" if _missing(v) else str(v) for v in values[0])
    empty = [k for k, i in enumerate(ids) if not i.strip()]
    if empty:
        raise InputDataError(f"{where}: {len(empty)} feature(s) have no {id_field} (NULL or blank), the first "
                             f"at {_positions(empty)} in the file's order; every zone needs an id")
    nulls = [k for k, g in enumerate(geoms) if g is None]
    if nulls:
        raise InputDataError(f"{where}: {len(nulls)} feature(s) have no geometry (NULL), the first at "
                             f"{_positions(nulls)} ({id_field} {ids[nulls[0]]!r})")
    other = [k for k, t in enumerate(shapely.get_type_id(geoms).tolist()) if t not in (3, 6)]  # (Multi)Polygon
    if other:
        kind = str(geoms[other[0]].geom_type)
        raise InputDataError(f"{where}: zones must be polygons; {len(other)} feature(s) are not, the first at "
                             f"{_positions(other)} ({id_field} {ids[other[0]]!r}: a {kind})")
    dupes = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dupes:
        raise InputDataError(f"{where}: the {id_field} values {dupes[:5]} name more than one zone")
    if not meta.get("crs"):
        raise InputDataError(f"{where}: has no CRS: the zones cannot be placed on any map; give the file one "
                             "(ogr2ogr -a_srs EPSG:<code> out.gpkg in.gpkg)")
    geoms = shapely.make_valid(geoms, method="structure")
    return ZoneLayer(str(path), ids, geoms, meta.get("crs"))


def _missing(value: object) -> bool:
    """A NULL field: ``None``, or NaN for a numeric column."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _positions(indices: list[int]) -> str:
    """The first features' positions, 1-based, for a message."""
    shown = ", ".join(f"#{k + 1}" for k in indices[:5])
    return f"feature {shown}" + (" ..." if len(indices) > 5 else "")


class ZoneTally:
    """Per zone and class, the valid pixels and areas of one raster item (a block consumer).

    Args:
        layer: the job's zones.
        grid: the item's grid (its CRS must be known).
        num_classes: classes of the labels.
        names: class names.
        row_area_m2: ground area of one pixel per row (``None``: pixel counts only).
        ignore: the nodata label.
        earlier: footprints of the items before this one in the job.

    Raises:
        InputDataError: the item has no CRS.
    """

    def __init__(self, layer: ZoneLayer, grid: Grid, num_classes: int, names: Sequence[str],
                 row_area_m2: np.ndarray | None, ignore: int | None, earlier: Sequence[Footprint] = ()) -> None:
        import shapely

        if grid.crs is None or layer.crs is None:
            missing = "the item" if grid.crs is None else f"the zones ({layer.source})"
            raise InputDataError(f"statistics.zones: {missing} has no CRS: the zones cannot be placed on the map")
        self.grid, self.num_classes, self.names = grid, num_classes, tuple(names)
        self.row_area_m2, self.ignore = row_area_m2, ignore
        # zones projected to pixel space find the blocks they meet (an STR tree); in another CRS
        # the projection is an approximation (densified edges), so their bounds get a pixel more
        self.same_crs = CRS.from_user_input(layer.crs) == CRS.from_user_input(grid.crs)
        margin = 0 if self.same_crs else 1
        frame = shapely.box(-margin, -margin, grid.width + margin, grid.height + margin)
        pixels = _to_pixels(layer.geometries, layer.crs, grid)
        self.zone_index = [i for i, g in enumerate(pixels) if g is not None and shapely.intersects(g, frame)]
        self.ids = [layer.ids[i] for i in self.zone_index]
        self.zones = [pixels[i] for i in self.zone_index]
        self.tree = shapely.STRtree(self.zones)
        self.bounds = shapely.bounds(np.array(self.zones, dtype=object)) if self.zones else np.zeros((0, 4))
        self.bounds = self.bounds + np.array([-margin, -margin, margin, margin])
        self.exact = [layer.geometries[i] for i in self.zone_index]
        for geom in self.exact:
            shapely.prepare(geom)
        # where the reprojected border may be off: a pixel on either side of it
        # (mitred joins: a few vertices per corner, and they contain the round ones)
        self.borders = [] if self.same_crs else [shapely.buffer(g.boundary, 1.0, join_style="mitre")
                                                 for g in self.zones]
        self.to_zones = None if self.same_crs else Transformer.from_crs(
            CRS.from_user_input(grid.crs), CRS.from_user_input(layer.crs), always_xy=True)
        others = [_to_pixels(np.array([f.polygon], dtype=object), f.crs, grid)[0] for f in earlier]
        self.earlier = shapely.union_all([g for g in others if g is not None]) if others else None
        # per zone, valid pixels per (row, class) over the rows the zone spans, and as many for the
        # pixels no earlier item covers: integers, so the areas (summed once, in finish) do not
        # depend on the order or the cut of the blocks
        self.counts: dict[int, np.ndarray] = {}
        self.first_row: dict[int, int] = {}

    def add(self, block: LabelBlock) -> None:
        """Count one block's valid pixels in every zone it meets."""
        import shapely

        (r0, c0), (h, w) = block.window.start, block.window.size
        labels = block.labels
        valid = np.ones(labels.shape, bool) if block.valid is None else block.valid.astype(bool, copy=False)
        if self.ignore is not None:
            valid = valid & (labels != self.ignore)
        m = 0 if self.same_crs else 1
        hit = self.tree.query(shapely.box(c0 - m, r0 - m, c0 + w + m, r0 + h + m))
        if not len(hit):
            return
        covered = _burn(self.earlier, block.window) if self.earlier is not None else None
        for z in hit.tolist():
            # only the part of the block under the zone's bounding box is burnt
            x0, y0, x1, y1 = self.bounds[z]
            sr0, sr1 = max(r0, int(np.floor(y0))), min(r0 + h, int(np.ceil(y1)))
            sc0, sc1 = max(c0, int(np.floor(x0))), min(c0 + w, int(np.ceil(x1)))
            if sr1 <= sr0 or sc1 <= sc0:
                continue
            part = (slice(sr0 - r0, sr1 - r0), slice(sc0 - c0, sc1 - c0))
            inside = self._inside(z, Window((sr0, sc0), (sr1 - sr0, sc1 - sc0))) & valid[part]
            if not inside.any():
                continue
            counts = self._counts(z)
            span = counts.shape[1]
            base = (np.arange(sr0, sr1, dtype=np.int64) - self.first_row[z]) * self.num_classes
            codes = labels[part][inside] + np.broadcast_to(base[:, None], inside.shape)[inside]
            size = span * self.num_classes
            found = np.bincount(codes, minlength=size).reshape(span, self.num_classes)
            counts[0] += found
            # the pixels no earlier item covers: all of them when there is none
            counts[1] += found if covered is None else \
                np.bincount(codes[~covered[part][inside]], minlength=size).reshape(span, self.num_classes)

    def _inside(self, z: int, window: Window) -> np.ndarray:
        """The pixels of ``window`` whose centre lies in zone ``z``."""
        if self.to_zones is None:
            return _burn(self.zones[z], window)
        import shapely

        # one pass burns both: 1 inside the projected zone, 2 near its border (burnt last)
        burnt = _burn(self.zones[z], window, self.borders[z])
        inside: np.ndarray = burnt == 1
        near = np.nonzero(burnt == 2)
        if near[0].size:
            rows, cols = near[0] + window.start[0] + 0.5, near[1] + window.start[1] + 0.5
            t = self.grid.transform
            x, y = self.to_zones.transform(t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f)
            inside[near] = shapely.contains_xy(self.exact[z], x, y)
        return inside

    def _counts(self, z: int) -> np.ndarray:
        if z not in self.counts:
            y0, y1 = self.bounds[z][1], self.bounds[z][3]
            first, last = max(0, int(np.floor(y0))), min(self.grid.height, int(np.ceil(y1)))
            self.first_row[z] = first
            self.counts[z] = np.zeros((2, max(last - first, 1), self.num_classes), np.int64)
        return self.counts[z]

    def finish(self) -> tuple[ZoneStats, ...]:
        """Every class of every zone that lies on the item (zeros for a zone over nodata only)."""
        out: list[ZoneStats] = []
        for z in range(len(self.ids)):
            counts = self._counts(z)
            pixels, own = counts[0].sum(axis=0), counts[1].sum(axis=0)
            area = own_area = None
            if self.row_area_m2 is not None:
                rows = self.row_area_m2[self.first_row[z]:self.first_row[z] + counts.shape[1]]
                area, own_area = rows @ counts[0], rows @ counts[1]
            weights = area if area is not None else pixels  # the share is of the zone's valid area
            for k in range(self.num_classes):
                share = weights[k] / weights.sum() if weights.sum() else 0.0
                out.append(ZoneStats(self.ids[z], k, self.names[k], int(pixels[k]),
                                     None if area is None else float(area[k]), float(share), int(own[k]),
                                     None if own_area is None else float(own_area[k])))
        return tuple(out)


def _to_pixels(geoms: Any, crs: str | None, grid: Grid) -> list[Any]:
    """Polygons in ``crs`` to the pixel space of ``grid`` (x: column, y: row); ``None`` for
    a polygon that does not survive the reprojection (outside the target CRS's domain)."""
    import shapely

    src, dst = CRS.from_user_input(crs), CRS.from_user_input(grid.crs)
    inverse = ~grid.transform
    if src != dst:
        transformer = Transformer.from_crs(src, dst, always_xy=True)
        bounds = shapely.bounds(geoms)
        step = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]) / _DENSIFY
        geoms = np.array([shapely.segmentize(g, s) if s > 0 else g for g, s in zip(geoms, step, strict=True)],
                         dtype=object)

        def project(xy: np.ndarray) -> np.ndarray:
            x, y = transformer.transform(xy[:, 0], xy[:, 1])
            return np.column_stack([x, y])

        geoms = shapely.transform(geoms, project)
    geoms = shapely.transform(geoms, lambda xy: _apply(inverse, xy))
    out: list[Any] = []
    for g in geoms:
        if g is None or not np.isfinite(shapely.bounds(g)).all():
            out.append(None)
        else:
            out.append(g if g.is_valid else shapely.make_valid(g, method="structure"))
    return out


def _apply(t: Affine, xy: np.ndarray) -> np.ndarray:
    return np.column_stack([t.a * xy[:, 0] + t.b * xy[:, 1] + t.c, t.d * xy[:, 0] + t.e * xy[:, 1] + t.f])


def _burn(polygon: Any, window: Window, *more: Any) -> np.ndarray:
    """Pixels of ``window`` whose centre lies in ``polygon`` (pixel space), as GDAL rasterizes;
    with ``more`` polygons, burnt after it with the values 2, 3, ... (uint8), else a mask."""
    import shapely

    (r0, c0), (h, w) = window.start, window.size
    # only the part over the window goes to GDAL (a zone spans many blocks; each vertex handed over
    # costs a Python object): the cut runs along pixel edges, never through a pixel's centre
    parts = [(part, value) for value, part in enumerate(shapely.clip_by_rect([polygon, *more], c0, r0, c0 + w, r0 + h),
                                                        start=1) if not part.is_empty]
    if not parts:
        return np.zeros((h, w), np.uint8 if more else bool)
    burnt: np.ndarray = features.rasterize(parts, out_shape=(h, w), transform=Affine.translation(c0, r0), fill=0,
                                           dtype="uint8")
    return burnt if more else burnt.view(bool)  # zeros and ones


__all__ = ["Footprint", "ItemZones", "ZoneLayer", "ZoneStats", "ZoneTally", "read_zones"]
