"""Exact lesion statistics of 3D label volumes that arrive block by block.

A **lesion** is one connected component of one lesion class. :class:`LesionTracker` labels each
block when it arrives, folds its components into running per-lesion sums, keeps only the block's
boundary faces until the neighbours across them have arrived, and joins components across block
borders with a union–find. The whole volume is never held: memory is the pending face slabs plus
a few numbers and one small convex hull per (lesion, axial slice). :func:`label_volume_reference`
computes the same lesions from a whole in-memory volume.

Conventions:

* Voxel indices are array indices ``(i, j, k)``. World (scanner) coordinates in mm are
  ``affine @ (i, j, k, 1)``: the affine maps voxel *centres*, as in NIfTI and ITK.
* ``volume_ml`` is ``voxels × |det(affine[:3, :3])| / 1000``.
* The **axial** slices are the planes of constant index along the voxel axis whose direction has
  the largest superior–inferior (world z, the affine's third row) component.
* The **longest axial diameter** is the largest distance in mm between two voxel *centres* of the
  lesion that lie in the same axial slice. A one-voxel lesion therefore has diameter 0, and a run
  of ``n`` voxels measures ``(n - 1) × spacing``; a caliper on the outer voxel edges reads about
  one voxel more.
* The diameter is exact, not sampled: the farthest pair of a point set are vertices of its convex
  hull. Hulls are kept per (lesion, slice) in integer voxel-index space, where they are exact; an
  affine map carries the hull of a set onto the hull of the mapped set, so distances are measured
  between the mapped hull vertices.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import numpy.typing as npt

from ..geometry import Window
from ..stitching.consumer import LabelBlock

IntArray = npt.NDArray[np.int64]
Point = tuple[int, int, int]
Rect = tuple[int, int, int, int]  # (u0, v0, u1, v1) on a plane between two voxel layers
_RANK = {6: 1, 18: 2, 26: 3}  # connectivity -> generate_binary_structure rank
_FEW_POINTS = 8  # slices with at most this many points keep them all instead of a hull


@dataclass(frozen=True)
class Lesion:
    """One connected component of one lesion class (see the module doc for conventions).

    ``id`` runs 1..n by descending volume, ties broken by the first voxel in C order.
    ``bbox_min`` and ``bbox_max`` are inclusive voxel indices.
    """

    id: int
    class_index: int
    voxels: int
    volume_ml: float
    centroid_mm: tuple[float, float, float]
    bbox_min: Point
    bbox_max: Point
    longest_axial_diameter_mm: float


class ClassBurden(TypedDict):
    """Lesion count and total lesion volume of one class."""

    lesions: int
    burden_ml: float


@dataclass(frozen=True)
class _Geometry:
    """The voxel-to-world mapping of one volume and the axial slicing it implies."""

    affine: npt.NDArray[np.float64]
    shape: Point

    @classmethod
    def of(cls, affine: npt.ArrayLike, shape: Sequence[int]) -> _Geometry:
        a = np.asarray(affine, dtype=np.float64)
        if a.shape != (4, 4) or not np.all(np.isfinite(a)) or not np.array_equal(a[3], [0, 0, 0, 1]):
            raise ValueError(f"affine must be a finite 4x4 matrix with last row 0 0 0 1, got {a.tolist()}")
        if abs(np.linalg.det(a[:3, :3])) == 0:
            raise ValueError(f"affine is singular: {a[:3, :3].tolist()}")
        dims = tuple(int(n) for n in shape)
        if len(dims) != 3 or any(n < 1 for n in dims):
            raise ValueError(f"shape must be 3 positive sizes, got {tuple(shape)}")
        return cls(a, (dims[0], dims[1], dims[2]))

    @property
    def slice_axis(self) -> int:
        """The voxel axis most aligned with the world superior–inferior axis."""
        return int(np.argmax(np.abs(self.affine[2, :3])))

    @property
    def plane_axes(self) -> tuple[int, int]:
        """The two voxel axes spanning an axial slice, in increasing order."""
        u, v = (a for a in range(3) if a != self.slice_axis)
        return u, v

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in mL (cm³)."""
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def diameter_mm(self, hull: IntArray) -> float:
        """Largest distance in mm between the in-plane index points ``hull`` of one slice."""
        if len(hull) < 2:
            return 0.0
        mm = hull.astype(np.float64) @ self.affine[:3, list(self.plane_axes)].T
        from scipy.spatial.distance import pdist  # scipy is imported only when lesions are measured

        return float(pdist(mm).max())

    def world(self, index: Sequence[float]) -> tuple[float, float, float]:
        """World coordinates (mm) of a (fractional) voxel index."""
        x, y, z = self.affine[:3, :3] @ np.asarray(index, dtype=np.float64) + self.affine[:3, 3]
        return float(x), float(y), float(z)


def _hull(points: IntArray) -> IntArray:
    """Points of distinct integer 2D ``points`` that include every convex hull vertex.

    That is the hull's vertices, the two ends if the points are collinear, or the points
    themselves when there are few (a superset of the vertices keeps the diameter exact).
    """
    if len(points) <= _FEW_POINTS:
        return points
    pts = points[np.lexsort((points[:, 1], points[:, 0]))]
    d = pts[1:] - pts[0]
    if not np.any(d[0, 0] * d[:, 1] - d[0, 1] * d[:, 0]):  # exact integer collinearity test
        return pts[[0, -1]]  # on a line, lexicographic order is order along the line
    from scipy.spatial import ConvexHull

    vertices: IntArray = np.sort(ConvexHull(pts.astype(np.float64)).vertices)
    return pts[vertices]


@dataclass
class _Component:
    """Running sums of one (partial) lesion; merged with :meth:`absorb`."""

    class_index: int
    voxels: int
    sums: list[int]
    lo: list[int]
    hi: list[int]
    first: Point
    slices: dict[int, IntArray]  # axial slice index -> hull vertices (in-plane voxel indices)

    def absorb(self, other: _Component) -> None:
        """Add ``other``'s voxels to this component."""
        self.voxels += other.voxels
        self.sums = [a + b for a, b in zip(self.sums, other.sums, strict=True)]
        self.lo = [min(a, b) for a, b in zip(self.lo, other.lo, strict=True)]
        self.hi = [max(a, b) for a, b in zip(self.hi, other.hi, strict=True)]
        self.first = min(self.first, other.first)
        for s, hull in other.slices.items():
            mine = self.slices.get(s)
            self.slices[s] = hull if mine is None else _hull(np.concatenate([mine, hull]))


def _lesions(
    components: Iterable[_Component], geometry: _Geometry, min_voxels: int, min_volume_ml: float
) -> list[Lesion]:
    """Filter by size, order by descending volume then first voxel, and number from 1."""
    kept = [c for c in components if c.voxels >= min_voxels and c.voxels * geometry.voxel_ml >= min_volume_ml]
    kept.sort(key=lambda c: (-c.voxels, c.first))
    out = []
    for number, c in enumerate(kept, start=1):
        centroid = [s / c.voxels for s in c.sums]
        diameter = max((geometry.diameter_mm(h) for h in c.slices.values()), default=0.0)
        out.append(Lesion(
            id=number, class_index=c.class_index, voxels=c.voxels, volume_ml=c.voxels * geometry.voxel_ml,
            centroid_mm=geometry.world(centroid), bbox_min=(c.lo[0], c.lo[1], c.lo[2]),
            bbox_max=(c.hi[0], c.hi[1], c.hi[2]), longest_axial_diameter_mm=diameter,
        ))
    return out


def _structure(connectivity: int, min_voxels: int, min_volume_ml: float) -> npt.NDArray[np.bool_]:
    """The labelling structure of ``connectivity``, once the options are checked."""
    if connectivity not in _RANK:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    if min_voxels < 1:
        raise ValueError(f"min_voxels must be >= 1, got {min_voxels}")
    if not min_volume_ml >= 0:
        raise ValueError(f"min_volume_ml must be >= 0, got {min_volume_ml}")
    from scipy import ndimage

    return np.asarray(ndimage.generate_binary_structure(3, _RANK[connectivity]), dtype=bool)


def _block_components(
    ids: IntArray, base: int, origin: Sequence[int], geometry: _Geometry, classes: Sequence[int]
) -> dict[int, _Component]:
    """Sums of the components of one labelled block; ``ids`` holds global ids ``base, base+1, ...``
    (0 outside lesions) and ``classes[gid]`` is the class of id ``gid``."""
    coords = np.nonzero(ids)  # C order, so each component's first hit is its first voxel
    local = ids[coords] - base
    pts = np.stack([c.astype(np.int64) + o for c, o in zip(coords, origin, strict=True)], axis=1)
    pts_by = pts[np.argsort(local, kind="stable")]
    starts = np.flatnonzero(np.r_[True, np.diff(np.sort(local)) != 0])
    counts = np.diff(np.r_[starts, len(local)]).tolist()
    sums, firsts = np.add.reduceat(pts_by, starts, axis=0).tolist(), pts_by[starts].tolist()
    lo, hi = np.minimum.reduceat(pts_by, starts, axis=0).tolist(), np.maximum.reduceat(pts_by, starts, axis=0).tolist()
    out = {}
    for n, f in enumerate(firsts):
        out[base + n] = _Component(classes[base + n], counts[n], sums[n], lo[n], hi[n], (f[0], f[1], f[2]), {})
    for n, s, hull in _slice_hulls(local, pts, geometry):
        out[base + n].slices[s] = hull
    return out


def _slice_hulls(local: IntArray, pts: IntArray, geometry: _Geometry) -> Iterable[tuple[int, int, IntArray]]:
    """``(component, slice, hull)`` for every axial slice of every component of one block.

    Only the two ends of each run of voxels along the slice's second axis can be hull vertices,
    so those alone go to :func:`_hull`.
    """
    s_ax, (u_ax, v_ax) = geometry.slice_axis, geometry.plane_axes
    order = np.lexsort((pts[:, v_ax], pts[:, u_ax], pts[:, s_ax], local))
    comp, s, u, v = local[order], pts[order, s_ax], pts[order, u_ax], pts[order, v_ax]
    new_row = np.r_[True, (np.diff(comp) != 0) | (np.diff(s) != 0) | (np.diff(u) != 0)]
    row_start = np.flatnonzero(new_row)
    ends = np.unique(np.r_[row_start, np.r_[row_start[1:], len(comp)] - 1])
    comp, s, uv = comp[ends], s[ends], np.stack([u[ends], v[ends]], axis=1)
    bounds = np.flatnonzero(np.r_[True, (np.diff(comp) != 0) | (np.diff(s) != 0), True])
    for a, b in itertools.pairwise(bounds.tolist()):
        yield int(comp[a]), int(s[a]), _hull(uv[a:b])


@dataclass
class _Face:
    """A pending boundary face of an arrived block. ``rect`` is ``(u0, v0, u1, v1)`` in the plane's
    two axes, ``reach`` the rectangle across the plane that can touch it, ``slab`` its global
    component ids (``None`` without lesion voxels), ``covered`` how much of ``reach`` has arrived."""

    rect: Rect
    reach: Rect
    slab: IntArray | None
    covered: int = 0


def _overlap(a: Rect, b: Rect) -> int:
    """Area of the intersection of two rectangles ``(u0, v0, u1, v1)``."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _touching_ids(mine: _Face, theirs: _Face, offsets: Sequence[tuple[int, int]]) -> IntArray:
    """Unique ``(my id, their id)`` pairs of lesion voxels across the plane that are neighbours:
    a voxel ``p`` of ``mine`` touches ``p + d`` of ``theirs`` for each in-plane offset ``d``."""
    found = [np.zeros((0, 2), dtype=np.int64)]
    if mine.slab is None or theirs.slab is None:
        return found[0]
    (mu, mv, _, _), (tu, tv, _, _) = mine.rect, theirs.rect
    for du, dv in offsets:
        u0, u1 = max(mu, tu - du), min(mine.rect[2], theirs.rect[2] - du)
        v0, v1 = max(mv, tv - dv), min(mine.rect[3], theirs.rect[3] - dv)
        if u0 < u1 and v0 < v1:
            x = mine.slab[u0 - mu : u1 - mu, v0 - mv : v1 - mv]
            y = theirs.slab[u0 + du - tu : u1 + du - tu, v0 + dv - tv : v1 + dv - tv]
            hit = (x > 0) & (y > 0)
            found.append(np.stack([x[hit], y[hit]], axis=1))
    return np.unique(np.concatenate(found), axis=0)


class LesionTracker:
    """Exact lesion statistics of one volume whose label blocks arrive in any order.

    Blocks must tile the volume, each voxel exactly once (a regular block lattice, possibly
    clipped at the far edges, is the intended case; any partition into boxes gives exact
    results, but faces are only freed early on a lattice). Labelling uses scipy's structure for
    ``connectivity`` (6: faces, 18: faces and edges, 26: faces, edges and corners) per lesion class,
    so a lesion never mixes classes. Lesions smaller than ``min_voxels`` voxels or
    ``min_volume_ml`` are dropped in :meth:`finish`.

    Memory: the boundary faces of arrived blocks whose neighbours are still missing, plus one
    accumulator (count, index sums, bbox, a hull per axial slice) per partial lesion.
    """

    def __init__(
        self,
        lesion_classes: Sequence[int],
        affine: npt.ArrayLike,
        shape: tuple[int, int, int],
        connectivity: int = 26,
        min_voxels: int = 1,
        min_volume_ml: float = 0.0,
    ) -> None:
        classes = [int(c) for c in lesion_classes]
        if not classes or len(set(classes)) != len(classes):
            raise ValueError(f"lesion_classes must be distinct and non-empty, got {list(lesion_classes)}")
        self._structure = _structure(connectivity, min_voxels, min_volume_ml)
        self._geometry = _Geometry.of(affine, shape)
        self._classes = classes
        self._reach = 0 if connectivity == 6 else 1  # in-plane reach across a face
        self._offsets = [  # in-plane steps to a neighbour across a face: |step| <= rank - 1
            (du, dv) for du in (-1, 0, 1) for dv in (-1, 0, 1) if abs(du) + abs(dv) < _RANK[connectivity]
        ]
        self._min_voxels, self._min_volume_ml = min_voxels, min_volume_ml
        self._parent: list[int] = [0]  # union-find over global component ids (0 unused)
        self._class_of: list[int] = [-1]
        self._components: dict[int, _Component] = {}  # root id -> accumulator
        self._faces: dict[tuple[int, int, int], list[_Face]] = {}  # (axis, plane, side) -> faces
        self._voxels_seen = 0
        self._starts_seen: set[tuple[int, ...]] = set()

    @property
    def shape(self) -> Point:
        """The volume's shape."""
        return self._geometry.shape

    @property
    def pending_face_voxels(self) -> int:
        """Voxels held in boundary slabs that still wait for a neighbour (the memory bound)."""
        return sum(f.slab.size for faces in self._faces.values() for f in faces if f.slab is not None)

    def add(self, block: LabelBlock) -> None:
        """The block-consumer side: :meth:`add_block`."""
        self.add_block(block.window, block.labels)

    def add_block(self, window: Window, labels: np.ndarray) -> None:
        """Add the label block ``labels`` that covers ``window`` of the volume."""
        self._check_block(window, labels)
        ids, base = self._label(labels)
        if self._next_id > base:
            self._components.update(_block_components(ids, base, window.start, self._geometry, self._class_of))
        for axis in range(3):
            for side in (0, 1):
                self._stitch_face(window, ids, axis, side)
        self._voxels_seen += window.count
        self._starts_seen.add(window.start)

    def finish(self) -> list[Lesion]:
        """The lesions of the whole volume; every voxel must have arrived."""
        total = math.prod(self.shape)
        if self._voxels_seen != total:
            raise ValueError(
                f"blocks covered {self._voxels_seen} of {total} voxels of volume {self.shape}; "
                "add every block exactly once before finish()"
            )
        return _lesions(self._components.values(), self._geometry, self._min_voxels, self._min_volume_ml)

    @property
    def _next_id(self) -> int:
        return len(self._parent)

    def _check_block(self, window: Window, labels: np.ndarray) -> None:
        if window.ndim != 3 or tuple(labels.shape) != window.size or window.count == 0:
            raise ValueError(f"labels of shape {labels.shape} do not fit non-empty 3D window {window}")
        if any(a < 0 for a in window.start) or any(b > n for b, n in zip(window.stop, self.shape, strict=True)):
            raise ValueError(f"window {window} reaches outside the volume {self.shape}")
        if window.start in self._starts_seen:
            raise ValueError(f"block {window} was already added: each voxel must arrive exactly once")
        if self._voxels_seen + window.count > math.prod(self.shape):
            raise ValueError(f"window {window} brings more voxels than volume {self.shape} holds: blocks overlap")

    def _label(self, labels: np.ndarray) -> tuple[IntArray, int]:
        """Global component ids of one block (0 outside lesions) and the first new id."""
        ids = np.zeros(labels.shape, dtype=np.int64)
        base = self._next_id
        for c in self._classes:
            lab, n = _label(labels == c, self._structure)
            if n:
                inside = lab > 0
                ids[inside] = lab[inside] + (self._next_id - 1)
                self._class_of.extend([c] * n)
                self._parent.extend(range(self._next_id, self._next_id + n))
        return ids, base

    def _stitch_face(self, window: Window, ids: IntArray, axis: int, side: int) -> None:
        """Merge one face of a new block with the pending faces across its plane; keep it while
        some of the voxels that can touch it are missing."""
        plane = window.start[axis] if side == 0 else window.stop[axis]
        if plane in (0, self.shape[axis]):
            return
        u, v = (a for a in range(3) if a != axis)
        rect = (window.start[u], window.start[v], window.stop[u], window.stop[v])
        r, (nu, nv) = self._reach, (self.shape[u], self.shape[v])
        reach = (max(rect[0] - r, 0), max(rect[1] - r, 0), min(rect[2] + r, nu), min(rect[3] + r, nv))
        slab: IntArray = np.take(ids, 0 if side == 0 else -1, axis=axis)
        face = _Face(rect, reach, slab if slab.any() else None)
        key = (axis, plane, 1 - side)
        waiting = []
        for other in self._faces.pop(key, []):
            gained = _overlap(face.rect, other.reach)
            if gained:
                self._union_pairs(_touching_ids(face, other, self._offsets))
                other.covered += gained
                face.covered += _overlap(other.rect, face.reach)
            if other.covered < _overlap(other.reach, other.reach):
                waiting.append(other)
        if waiting:
            self._faces[key] = waiting
        if face.covered < _overlap(reach, reach):
            self._faces.setdefault((axis, plane, side), []).append(face)

    def _union_pairs(self, pairs: IntArray) -> None:
        for a, b in pairs.tolist():
            if self._class_of[a] == self._class_of[b]:
                self._union(a, b)

    def _find(self, x: int) -> int:
        parent = self._parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return
        if self._components[ra].voxels < self._components[rb].voxels:
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._components[ra].absorb(self._components.pop(rb))


def label_volume_reference(
    labels: np.ndarray,
    lesion_classes: Sequence[int],
    connectivity: int,
    affine: npt.ArrayLike,
    *,
    min_voxels: int = 1,
    min_volume_ml: float = 0.0,
) -> list[Lesion]:
    """The lesions of a whole in-memory volume, computed directly (for tests and tiny inputs).

    Same conventions and results as :class:`LesionTracker`; each slice's hull is taken over all
    of the slice's voxel centres at once.
    """
    volume = np.asarray(labels)
    structure = _structure(connectivity, min_voxels, min_volume_ml)
    geometry = _Geometry.of(affine, volume.shape)
    components = []
    for c in dict.fromkeys(int(k) for k in lesion_classes):
        from scipy import ndimage

        lab, _ = ndimage.label(volume == c, structure=structure)
        for k, box in enumerate(ndimage.find_objects(lab), start=1):
            if box is not None:
                pts = np.argwhere(lab[box] == k).astype(np.int64) + [b.start for b in box]
                components.append(_component_of_points(c, pts, geometry))
    return _lesions(components, geometry, min_voxels, min_volume_ml)


def _component_of_points(class_index: int, pts: IntArray, geometry: _Geometry) -> _Component:
    """Sums of one whole component given its voxel indices ``pts`` in C order."""
    s_ax, plane = geometry.slice_axis, list(geometry.plane_axes)
    slices = {int(s): _hull(pts[pts[:, s_ax] == s][:, plane]) for s in np.unique(pts[:, s_ax])}
    f = pts[0]
    return _Component(
        class_index, len(pts), pts.sum(axis=0).tolist(), pts.min(axis=0).tolist(), pts.max(axis=0).tolist(),
        (int(f[0]), int(f[1]), int(f[2])), slices,
    )


def summarize(lesions: Iterable[Lesion], classes: Sequence[int] = ()) -> dict[int, ClassBurden]:
    """Lesion count and total burden (mL) per class, by class index; ``classes`` are listed even
    when they have no lesion."""
    out: dict[int, ClassBurden] = {int(c): ClassBurden(lesions=0, burden_ml=0.0) for c in classes}
    for lesion in lesions:
        entry = out.setdefault(lesion.class_index, ClassBurden(lesions=0, burden_ml=0.0))
        entry["lesions"] += 1
        entry["burden_ml"] += lesion.volume_ml
    return dict(sorted(out.items()))


def _label(mask: np.ndarray, structure: np.ndarray) -> tuple[np.ndarray, int]:
    from scipy import ndimage  # imported only when lesions are measured

    lab, n = ndimage.label(mask, structure=structure)
    return lab, int(n)
