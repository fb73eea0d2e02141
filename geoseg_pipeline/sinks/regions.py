"""Connected regions of a label map that arrives block by block, as polygons equal to
polygonizing the whole map at once (GDAL's ``GDALPolygonize``, 4- or 8-connected).

:class:`RegionTracker` labels each block's regions of equal class when the block arrives and
polygonizes them with GDAL on the block (pixel space: a region's polygon has integer vertices,
so every later step is exact). A region that touches a block side whose neighbour has not arrived
yet is held, with that side's row or column of region ids; when the neighbour arrives, regions of
the same class that meet across the side are joined (union–find) and the side is dropped. A
region whose sides are all settled is complete: its pieces are unioned, the vertices the block
seams left on straight edges are removed (GDAL's polygons have none), and it is handed out.

Memory is what lies on the frontier of blocks that have arrived: the pending sides' strips and the
pieces of the regions that touch them, never the map. Blocks may arrive in any order and be cut
in any way, provided they do not overlap.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from affine import Affine
from rasterio import features
from scipy import ndimage

from ..geometry import Window

Connectivity = Literal[4, 8]
_SIDES = ("top", "bottom", "left", "right")


@dataclass(frozen=True)
class Region:
    """One connected region of one class. ``geometry`` is a shapely polygon (a multipolygon for
    8-connected regions) in pixel space: x is the column, y the row, pixel corners at integers.
    ``area_m2`` is ``None`` when the map has no ground areas."""

    class_index: int
    pixels: int
    area_m2: float | None
    geometry: Any = field(compare=False)


@dataclass
class _Side:
    """One side of an arrived block: the region ids along it, and how many pixels just outside
    it (those a region on this side can touch) are covered by arrived blocks."""

    ids: np.ndarray  # region ids of the block's edge row or column (0: no region)
    rows: tuple[int, int]  # the outside strip, [start, stop) rows and columns
    cols: tuple[int, int]
    covered: int = 0

    @property
    def size(self) -> int:
        return (self.rows[1] - self.rows[0]) * (self.cols[1] - self.cols[0])


@dataclass
class _Block:
    window: Window
    sides: dict[str, _Side]


@dataclass
class _Piece:
    """A region's part within one block (or, at a root, the running sums of its whole group)."""

    class_index: int
    pixels: int
    area: float
    geometry: Any
    open_sides: int = 0
    members: list[int] = field(default_factory=list)


class RegionTracker:
    """Exact connected regions of a 2D label map from its blocks (see the module doc).

    Args:
        shape: the map's ``(rows, columns)``.
        connectivity: 4 (edges) or 8 (edges and corners), as GDAL's polygonize and sieve.
        ignore: the label that is no region (nodata), or ``None``.
        row_area_m2: ground area of one pixel of each row (``None``: no areas).
    """

    def __init__(self, shape: tuple[int, int], *, connectivity: Connectivity = 4, ignore: int | None = None,
                 row_area_m2: np.ndarray | None = None) -> None:
        if connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
        self.shape = shape
        self.connectivity = connectivity
        self.ignore = ignore
        self.row_area_m2 = row_area_m2
        self._structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
        self._next_id = 1
        self._parent: dict[int, int] = {}
        self._pieces: dict[int, _Piece] = {}
        self._blocks: list[_Block] = []

    @property
    def pending_regions(self) -> int:
        """Regions held until a neighbouring block arrives."""
        return sum(1 for k, v in self._parent.items() if k == v)

    def add(self, window: Window, labels: np.ndarray, valid: np.ndarray | None = None) -> list[Region]:
        """Take one block; returns the regions it completed.

        Raises:
            ValueError: the block does not lie inside the map, or its labels do not fit it.
        """
        (r0, c0), (h, w) = window.start, window.size
        if r0 < 0 or c0 < 0 or r0 + h > self.shape[0] or c0 + w > self.shape[1]:
            raise ValueError(f"block {window} does not lie inside the map {self.shape}")
        if labels.shape != (h, w):
            raise ValueError(f"block {window} got labels of shape {labels.shape}")
        ids = self._label(window, labels, valid)
        block = _Block(window, self._sides(window, ids))
        done: list[int] = []
        for other in list(self._blocks):
            if _touch(other.window, window, self.connectivity):
                self._join(other, block)
                done.extend(self._settle(other))
        for side in block.sides.values():
            for gid in np.unique(side.ids[side.ids > 0]).tolist():
                self._pieces[self._find(int(gid))].open_sides += 1
        done.extend(self._settle(block))
        # regions of this block that touch no open side are complete at once
        first = int(ids.max(initial=0))
        done.extend(g for g in range(self._next_id, first + 1) if self._parent.get(g) == g
                    and self._pieces[g].open_sides == 0)
        self._next_id = max(self._next_id, first + 1)
        if any(s for s in block.sides.values()):
            self._blocks.append(block)
        return [self._emit(root) for root in dict.fromkeys(self._find(g) for g in done) if root in self._pieces
                and self._pieces[root].open_sides == 0]

    def finish(self) -> list[Region]:
        """Every block was added: the regions still held (those along sides no block covers)."""
        roots = [g for g, p in self._parent.items() if g == p]
        self._blocks.clear()
        return [self._emit(root) for root in roots]

    # -- labelling ---------------------------------------------------------------------------

    def _label(self, window: Window, labels: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        """Global region ids of the block (0: none) and, for each new id, its piece."""
        mask = np.ones(labels.shape, bool) if valid is None else valid.astype(bool, copy=False)
        if self.ignore is not None:
            mask &= labels != self.ignore
        ids = np.zeros(labels.shape, np.int64)
        classes: list[int] = []
        n = 0
        for c in np.unique(labels[mask]).tolist():
            lab, k = ndimage.label(mask & (labels == c), self._structure)
            ids[lab > 0] = lab[lab > 0] + n
            classes.extend([int(c)] * k)
            n += k
        if n == 0:
            return ids
        base = self._next_id - 1
        (r0, c0), (h, w) = window.start, window.size
        flat = ids.ravel()
        pixels = np.bincount(flat, minlength=n + 1)
        areas = (np.bincount(flat, weights=np.repeat(self.row_area_m2[r0:r0 + h], w), minlength=n + 1)
                 if self.row_area_m2 is not None else np.zeros(n + 1))
        shapes = _polygons(ids, self.connectivity, Affine.translation(c0, r0))
        for local in range(1, n + 1):
            gid = base + local
            self._parent[gid] = gid
            self._pieces[gid] = _Piece(classes[local - 1], int(pixels[local]), float(areas[local]),
                                       shapes[local], members=[gid])
        ids[ids > 0] += base
        return ids

    def _sides(self, window: Window, ids: np.ndarray) -> dict[str, _Side]:
        """The block's sides that face map pixels (not the map's border), with their strips."""
        (r0, c0), (h, w) = window.start, window.size
        rows, cols = self.shape
        e = 1 if self.connectivity == 8 else 0
        span = (max(c0 - e, 0), min(c0 + w + e, cols))
        sides: dict[str, _Side] = {}
        if r0 > 0:
            sides["top"] = _Side(ids[0].copy(), (r0 - 1, r0), span)
        if r0 + h < rows:
            sides["bottom"] = _Side(ids[-1].copy(), (r0 + h, r0 + h + 1), span)
        if c0 > 0:
            sides["left"] = _Side(ids[:, 0].copy(), (r0, r0 + h), (c0 - 1, c0))
        if c0 + w < cols:
            sides["right"] = _Side(ids[:, -1].copy(), (r0, r0 + h), (c0 + w, c0 + w + 1))
        return sides

    # -- joining -----------------------------------------------------------------------------

    def _join(self, a: _Block, b: _Block) -> None:
        """Join the regions of the same class that meet across the border of ``a`` and ``b``,
        and count the pixels each covers of the other's side strips."""
        for x, y in ((a, b), (b, a)):
            for side in x.sides.values():
                side.covered += _overlap(side, y.window)
        pairs: list[np.ndarray] = []
        for x, y in ((a, b), (b, a)):
            # a side already settled has been joined with every block across it
            if x.window.stop[0] == y.window.start[0] and "bottom" in x.sides and "top" in y.sides:  # x above y
                pairs.append(self._pairs(x.sides["bottom"].ids, x.window.start[1],
                                         y.sides["top"].ids, y.window.start[1]))
            if x.window.stop[1] == y.window.start[1] and "right" in x.sides and "left" in y.sides:  # x left of y
                pairs.append(self._pairs(x.sides["right"].ids, x.window.start[0],
                                         y.sides["left"].ids, y.window.start[0]))
        if not pairs:
            return
        for gx, gy in np.unique(np.concatenate(pairs), axis=0).tolist():
            self._union(gx, gy)

    def _pairs(self, ids_a: np.ndarray, start_a: int, ids_b: np.ndarray, start_b: int) -> np.ndarray:
        """``(id in a, id in b)`` of neighbouring pixels across a border line, where both are
        regions of the same class: ``ids_a`` starts at ``start_a`` along the line, ``ids_b`` at
        ``start_b``; ``a`` lies before the line, ``b`` after it."""
        found = [np.empty((0, 2), np.int64)]
        for d in (0,) if self.connectivity == 4 else (-1, 0, 1):
            lo = max(start_a, start_b - d)
            hi = min(start_a + len(ids_a), start_b - d + len(ids_b))
            if hi <= lo:
                continue
            xa = ids_a[lo - start_a:hi - start_a]
            xb = ids_b[lo + d - start_b:hi + d - start_b]
            keep = (xa > 0) & (xb > 0)
            found.append(np.stack([xa[keep], xb[keep]], axis=1))
        both = np.unique(np.concatenate(found), axis=0)
        same = [i for i, (x, y) in enumerate(both.tolist())
                if self._pieces[self._find(x)].class_index == self._pieces[self._find(y)].class_index]
        return both[same]

    def _find(self, gid: int) -> int:
        parent = self._parent
        root = gid
        while parent[root] != root:
            root = parent[root]
        while parent[gid] != root:
            parent[gid], gid = root, parent[gid]
        return root

    def _union(self, x: int, y: int) -> None:
        rx, ry = self._find(x), self._find(y)
        if rx == ry:
            return
        px, py = self._pieces[rx], self._pieces[ry]
        if len(px.members) < len(py.members):
            rx, ry, px, py = ry, rx, py, px
        self._parent[ry] = rx
        px.pixels += py.pixels
        px.area += py.area
        px.open_sides += py.open_sides
        px.members.extend(py.members)
        px.geometry = [*_parts(px.geometry), *_parts(py.geometry)]
        del self._pieces[ry]

    def _settle(self, block: _Block) -> Iterator[int]:
        """Drop the sides of ``block`` that are now fully covered; yields the roots of regions
        that touched them."""
        for name in _SIDES:
            side = block.sides.get(name)
            if side is None or side.covered < side.size:
                continue
            del block.sides[name]
            for gid in np.unique(side.ids[side.ids > 0]).tolist():
                root = self._find(int(gid))
                self._pieces[root].open_sides -= 1
                yield root
        if not block.sides and block in self._blocks:
            self._blocks.remove(block)

    def _emit(self, root: int) -> Region:
        import shapely  # the vector extra: only the vector sinks make a tracker

        piece = self._pieces.pop(root)
        for gid in piece.members:
            del self._parent[gid]
        parts = _parts(piece.geometry)
        if len(parts) == 1 and self.connectivity == 4:
            geometry = parts[0]
        else:
            # The pieces share edges along block seams and overlap nowhere: with a vertex at every
            # pixel corner (segmentize; rounded, as it interpolates in floats) the shared edges
            # match vertex for vertex, which makes the pieces a polygon coverage, and a coverage
            # union only drops the shared edges (exact in pixel space, and far cheaper than an
            # overlay). Douglas-Peucker with tolerance 0 then removes the vertices on straight
            # edges (GDAL has none there): on rings of axis-parallel edges it removes exactly
            # those, so the point set and validity are kept without the slow topology check.
            noded = shapely.transform(shapely.segmentize(parts, 1.0), np.rint)
            geometry = shapely.simplify(shapely.coverage_union_all(noded), 0, preserve_topology=False)
            if self.connectivity == 8:
                geometry = shapely.multipolygons(shapely.get_parts(geometry))
        area = piece.area if self.row_area_m2 is not None else None
        return Region(piece.class_index, piece.pixels, area, geometry)


def _parts(geometry: Any) -> list[Any]:
    return geometry if isinstance(geometry, list) else [geometry]


def _polygons(ids: np.ndarray, connectivity: Connectivity, transform: Affine) -> dict[int, Any]:
    """GDAL's polygon of every region id of a block, in pixel space (``transform``: the block's
    offset). An 8-connected region whose pixels meet only at corners is made valid (GDAL gives
    one ring that touches itself)."""
    import shapely

    values = ids.astype(np.int32)
    keys: list[int] = []
    rings: list[np.ndarray] = []
    ring_ends: list[int] = []
    polygon_ends: list[int] = []
    for geom, value in features.shapes(values, mask=values > 0, connectivity=connectivity, transform=transform):
        keys.append(int(value))
        for ring in geom["coordinates"]:
            rings.append(np.asarray(ring, dtype=np.float64))
            ring_ends.append(ring_ends[-1] + len(ring) if ring_ends else len(ring))
        polygon_ends.append(len(ring_ends))
    if not keys:
        return {}
    # one call builds every polygon of the block (shapely's shape() per dict costs far more)
    polygons = shapely.from_ragged_array(shapely.GeometryType.POLYGON, np.concatenate(rings),
                                         (np.array([0, *ring_ends]), np.array([0, *polygon_ends])))
    out: dict[int, Any] = {}
    for key, polygon in zip(keys, polygons, strict=True):
        out[key] = polygon if key not in out else shapely.union(out[key], polygon)
    if connectivity == 8:
        out = {k: v if v.is_valid else shapely.make_valid(v, method="structure") for k, v in out.items()}
    return out


def _touch(a: Window, b: Window, connectivity: Connectivity) -> bool:
    """Whether a pixel of ``a`` neighbours a pixel of ``b``."""
    e = 1 if connectivity == 8 else 0
    (ar, ac), (ah, aw) = a.start, a.size
    (br, bc), (bh, bw) = b.start, b.size
    rows_meet = ar + ah == br or br + bh == ar
    cols_meet = ac + aw == bc or bc + bw == ac
    rows_overlap = ar - e < br + bh and br - e < ar + ah
    cols_overlap = ac - e < bc + bw and bc - e < ac + aw
    return (rows_meet and cols_overlap) or (cols_meet and rows_overlap)


def _overlap(side: _Side, window: Window) -> int:
    (r0, c0), (h, w) = window.start, window.size
    rows = min(side.rows[1], r0 + h) - max(side.rows[0], r0)
    cols = min(side.cols[1], c0 + w) - max(side.cols[0], c0)
    return max(rows, 0) * max(cols, 0)


def regions_of(labels: np.ndarray, blocks: Iterable[Window], **options: Any) -> list[Region]:
    """Every region of ``labels`` fed block by block (tests and small maps)."""
    tracker = RegionTracker(labels.shape, **options)  # type: ignore[arg-type]
    out: list[Region] = []
    for window in blocks:
        out.extend(tracker.add(window, labels[window.slices()]))
    out.extend(tracker.finish())
    return out


__all__ = ["Connectivity", "Region", "RegionTracker", "regions_of"]
