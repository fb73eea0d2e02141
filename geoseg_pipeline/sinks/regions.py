"""Connected regions of a label map that arrives block by block, as polygons equal to
polygonizing the whole map at once (GDAL's ``GDALPolygonize``, 4- or 8-connected).

:func:`block_regions` labels one block's regions of equal class and polygonizes them with GDAL
on the block (pixel space: a region's polygon has integer vertices, so every later step is
exact); a worker runs it on each block it finishes, and :class:`RegionTracker` on the blocks it
gets without. A region that touches a block side whose neighbour has not arrived
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
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from rasterio import features
from scipy import ndimage

from ..geometry import Window
from ..tasks import BlockRegions, RegionSettings

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
        self.settings = RegionSettings(connectivity, ignore, row_area_m2)
        self.connectivity: Connectivity = connectivity
        self.row_area_m2 = row_area_m2
        self._next_id = 1
        self._parent: dict[int, int] = {}
        self._pieces: dict[int, _Piece] = {}
        self._blocks: list[_Block] = []
        self._seam_cols: set[int] = set()  # the columns and rows where blocks meet
        self._seam_rows: set[int] = set()

    @property
    def pending_regions(self) -> int:
        """Regions held until a neighbouring block arrives."""
        return sum(1 for k, v in self._parent.items() if k == v)

    def add(self, window: Window, labels: np.ndarray, valid: np.ndarray | None = None,
            regions: BlockRegions | None = None) -> list[Region]:
        """Take one block; returns the regions it completed. ``regions``: the block's regions as
        :func:`block_regions` found them elsewhere (a worker), with this tracker's settings;
        ``None``: found here.

        Raises:
            ValueError: the block does not lie inside the map, or its labels do not fit it.
        """
        (r0, c0), (h, w) = window.start, window.size
        if r0 < 0 or c0 < 0 or r0 + h > self.shape[0] or c0 + w > self.shape[1]:
            raise ValueError(f"block {window} does not lie inside the map {self.shape}")
        if labels.shape != (h, w):
            raise ValueError(f"block {window} got labels of shape {labels.shape}")
        if regions is None:
            regions = regions_in_block(self.settings, window, labels, valid)
        elif regions.edges[0].shape != (w,) or regions.edges[2].shape != (h,):
            raise ValueError(f"block {window} got regions of a {len(regions.edges[2])} x {len(regions.edges[0])} block")
        edges = self._adopt(window, regions)
        self._seam_cols.update((c0, c0 + w))
        self._seam_rows.update((r0, r0 + h))
        block = _Block(window, self._sides(window, edges))
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
        last = self._next_id + regions.count
        done.extend(g for g in range(self._next_id, last) if self._parent.get(g) == g
                    and self._pieces[g].open_sides == 0)
        self._next_id = last
        if any(s for s in block.sides.values()):
            self._blocks.append(block)
        return self._emit_all([root for root in dict.fromkeys(self._find(g) for g in done) if root in self._pieces
                               and self._pieces[root].open_sides == 0])

    def finish(self) -> list[Region]:
        """Every block was added: the regions still held (those along sides no block covers)."""
        roots = [g for g, p in self._parent.items() if g == p]
        self._blocks.clear()
        return self._emit_all(roots)

    # -- labelling ---------------------------------------------------------------------------

    def _adopt(self, window: Window, regions: BlockRegions) -> tuple[np.ndarray, ...]:
        """A piece for each of the block's regions, under new global ids; returns the block's
        four edges in those ids (0: no region)."""
        base = self._next_id - 1
        shapes = _geometries(regions, window.start, self.connectivity)
        areas = regions.areas if regions.areas is not None else np.zeros(regions.count)
        for local, (klass, pixels, area) in enumerate(zip(regions.classes.tolist(), regions.pixels.tolist(),
                                                          areas.tolist(), strict=True), start=1):
            gid = base + local
            self._parent[gid] = gid
            self._pieces[gid] = _Piece(klass, pixels, area, shapes[local], members=[gid])
        return tuple(np.where(edge > 0, edge.astype(np.int64) + base, 0) for edge in regions.edges)

    def _sides(self, window: Window, edges: tuple[np.ndarray, ...]) -> dict[str, _Side]:
        """The block's sides that face map pixels (not the map's border), with their strips;
        ``edges``: the region ids of its top row, bottom row, left and right columns."""
        (r0, c0), (h, w) = window.start, window.size
        top, bottom, left, right = edges
        rows, cols = self.shape
        e = 1 if self.connectivity == 8 else 0
        span = (max(c0 - e, 0), min(c0 + w + e, cols))
        sides: dict[str, _Side] = {}
        if r0 > 0:
            sides["top"] = _Side(top, (r0 - 1, r0), span)
        if r0 + h < rows:
            sides["bottom"] = _Side(bottom, (r0 + h, r0 + h + 1), span)
        if c0 > 0:
            sides["left"] = _Side(left, (r0, r0 + h), (c0 - 1, c0))
        if c0 + w < cols:
            sides["right"] = _Side(right, (r0, r0 + h), (c0 + w, c0 + w + 1))
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

    def _emit_all(self, roots: Iterable[int]) -> list[Region]:
        """Hand out the regions of ``roots``: their pieces joined into one geometry each."""
        import shapely  # the vector extra: only the vector sinks make a tracker

        regions: list[Region] = []
        joined: list[int] = []  # which of ``regions`` were joined from several pieces
        for root in roots:
            piece = self._pieces.pop(root)
            for gid in piece.members:
                del self._parent[gid]
            parts = _parts(piece.geometry)
            if len(parts) == 1 and self.connectivity == 4:
                geometry = parts[0]
            else:
                # The pieces share edges along block seams and overlap nowhere: with a vertex at
                # every pixel corner of the edges that lie on a seam, the shared edges match vertex
                # for vertex, which makes the pieces a polygon coverage, and a coverage union only
                # drops the shared edges (exact in pixel space, and far cheaper than an overlay).
                # The vertices that leaves on straight edges are removed below.
                geometry = shapely.coverage_union_all(_node_seams(parts, self._seam_cols, self._seam_rows))
                joined.append(len(regions))
            area = piece.area if self.row_area_m2 is not None else None
            regions.append(Region(piece.class_index, piece.pixels, area, geometry))
        if joined:
            straight = _without_straight_vertices(np.array([regions[i].geometry for i in joined], dtype=object))
            if self.connectivity == 4:  # a region joined across edges is one polygon
                straight = shapely.get_geometry(straight, 0) if straight[0].geom_type == "MultiPolygon" else straight
            for i, geometry in zip(joined, straight, strict=True):
                regions[i] = replace(regions[i], geometry=geometry)
        if self.connectivity == 8:
            for i, region in enumerate(regions):
                if region.geometry.geom_type != "MultiPolygon":
                    regions[i] = replace(region, geometry=shapely.multipolygons(shapely.get_parts(region.geometry)))
        return regions


def _node_seams(parts: list[Any], cols: set[int], rows: set[int]) -> np.ndarray:
    """``parts`` (polygons in pixel space, every edge axis-parallel, integer vertices) with a
    vertex at every pixel corner of the edges that lie on a seam: a vertical edge on one of
    ``cols``, a horizontal one on one of ``rows``. All rings at once, on shapely's ragged arrays;
    the other edges keep their vertices."""
    import shapely

    kind, coords, offsets = shapely.to_ragged_array(parts)
    ring_ends = offsets[0].astype(np.int64)
    step = np.zeros_like(coords)
    step[:-1] = coords[1:] - coords[:-1]
    step[ring_ends[1:] - 1] = 0  # a ring's closing vertex starts no edge
    vertical, horizontal = step[:, 0] == 0, step[:, 1] == 0
    on_seam = (vertical & np.isin(coords[:, 0], np.fromiter(cols, float, len(cols)))) \
        | (horizontal & np.isin(coords[:, 1], np.fromiter(rows, float, len(rows))))
    length = np.abs(step).sum(axis=1).astype(np.int64)
    extra = np.where(on_seam & (length > 1), length - 1, 0)
    if not extra.any():
        nodes: np.ndarray = np.asarray(parts, dtype=object)
        return nodes
    copies = extra + 1
    source = np.repeat(np.arange(len(coords)), copies)
    offset = np.arange(len(source)) - np.repeat(np.cumsum(copies) - copies, copies)  # 0..extra
    noded = coords[source] + offset[:, None] * np.sign(step[source])
    new_ends = np.concatenate([[0], np.cumsum(copies)])[ring_ends]
    out: np.ndarray = shapely.from_ragged_array(kind, noded, (new_ends, *offsets[1:]))
    return out


def _without_straight_vertices(geometries: np.ndarray) -> np.ndarray:
    """``geometries`` (polygons or multipolygons in pixel space, every edge axis-parallel; as
    multipolygons when any is one) without the vertices that lie between two collinear edges: GDAL's polygons have
    none there, and a vertex whose neighbours share its column or its row is exactly such a one.
    All rings at once, on shapely's ragged arrays."""
    import shapely

    kind, coords, (ring_ends, *outer_ends) = shapely.to_ragged_array(geometries)
    start, stop = ring_ends[:-1].astype(np.int64), ring_ends[1:].astype(np.int64) - 1  # open rings
    size = stop - start
    ring = np.repeat(np.arange(len(size)), size)
    index = np.arange(len(ring)) - np.repeat(np.cumsum(size) - size, size) + np.repeat(start, size)
    prev = np.where(index == np.repeat(start, size), np.repeat(stop - 1, size), index - 1)
    nxt = np.where(index == np.repeat(stop - 1, size), np.repeat(start, size), index + 1)
    here, before, after = coords[index], coords[prev], coords[nxt]
    straight = ((before[:, 0] == here[:, 0]) & (after[:, 0] == here[:, 0])) \
        | ((before[:, 1] == here[:, 1]) & (after[:, 1] == here[:, 1]))
    keep = index[~straight]
    kept_ring = ring[~straight]
    counts = np.bincount(kept_ring, minlength=len(size))
    firsts = np.cumsum(counts) - counts
    # close each ring again with its first kept vertex
    closed = np.insert(keep, np.cumsum(counts), keep[firsts])
    new_ends = np.concatenate([[0], np.cumsum(counts + 1)])
    out: np.ndarray = shapely.from_ragged_array(kind, coords[closed], (new_ends, *outer_ends))
    return out


def _parts(geometry: Any) -> list[Any]:
    return geometry if isinstance(geometry, list) else [geometry]


def block_regions(labels: np.ndarray, valid: np.ndarray | None = None, *, connectivity: int = 4,
                  ignore: int | None = None, row_area_m2: np.ndarray | None = None) -> BlockRegions:
    """One block's connected regions of one class (pure: a worker runs it on the blocks it
    finishes, a :class:`RegionTracker` on those it is given bare). ``valid``: pixels that belong
    to a region at all (``None``: all but ``ignore``); ``row_area_m2``: the ground area of a pixel
    of each of the block's rows (``None``: no areas)."""
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    mask = np.ones(labels.shape, bool) if valid is None else valid.astype(bool, copy=False)
    if ignore is not None:
        mask &= labels != ignore
    ids = np.zeros(labels.shape, np.int32)
    classes: list[int] = []
    n = 0
    for c in np.unique(labels[mask]).tolist():
        region = mask & (labels == c)
        lab, k = ndimage.label(region, structure, output=np.int32)
        ids[region] = lab[region] + n
        classes.extend([int(c)] * k)
        n += k
    flat = ids.ravel()
    pixels = np.bincount(flat, minlength=n + 1)[1:]
    areas = (np.bincount(flat, weights=np.repeat(row_area_m2, labels.shape[1]), minlength=n + 1)[1:]
             if row_area_m2 is not None else None)
    # vertices relative to the block's corner: two bytes each up to 65,535 pixels a side
    vertex = np.uint16 if max(labels.shape) <= np.iinfo(np.uint16).max else np.int32
    keys: list[int] = []
    rings: list[np.ndarray] = [np.empty((0, 2), vertex)]
    ring_ends: list[int] = [0]
    polygon_ends: list[int] = [0]
    if n:
        for geom, value in features.shapes(ids, mask=ids > 0, connectivity=connectivity):
            keys.append(int(value))
            for ring in geom["coordinates"]:
                rings.append(np.asarray(ring, dtype=vertex))
                ring_ends.append(ring_ends[-1] + len(ring))
            polygon_ends.append(len(ring_ends) - 1)
    return BlockRegions(np.array(classes, np.int32), pixels.astype(np.int64), areas,
                        (ids[0].copy(), ids[-1].copy(), ids[:, 0].copy(), ids[:, -1].copy()),
                        np.array(keys, np.int32), np.concatenate(rings), np.array(ring_ends, np.int64),
                        np.array(polygon_ends, np.int64))


def regions_in_block(settings: RegionSettings, window: Window, labels: np.ndarray,
                     valid: np.ndarray | None = None) -> BlockRegions:
    """:func:`block_regions` of the block at ``window`` of a map, with ``settings`` (its rows'
    ground areas taken from the map's)."""
    (r0, _), (h, _) = window.start, window.size
    rows = settings.row_area_m2[r0:r0 + h] if settings.row_area_m2 is not None else None
    return block_regions(labels, valid, connectivity=settings.connectivity, ignore=settings.ignore, row_area_m2=rows)


def _geometries(regions: BlockRegions, start: tuple[int, ...], connectivity: int) -> dict[int, Any]:
    """The polygon of each of ``regions`` (by local id) in the map's pixel space (``start``: the
    block's corner). An 8-connected region whose pixels meet only at corners is made valid (GDAL
    gives one ring that touches itself)."""
    import shapely

    if not len(regions.keys):
        return {}
    # one call builds every polygon of the block (shapely's shape() per dict costs far more)
    coords = regions.coords.astype(np.float64) + np.array([start[1], start[0]], np.float64)
    polygons = shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords,
                                         (regions.ring_ends, regions.polygon_ends))
    out: dict[int, Any] = {}
    for key, polygon in zip(regions.keys.tolist(), polygons, strict=True):
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


__all__ = ["Connectivity", "Region", "RegionTracker", "block_regions", "regions_in_block", "regions_of"]
