"""Synthetic abdominal CT phantoms with liver tumours, written as NIfTI like real scans.

Generative model
----------------
A phantom is built in the patient frame (millimetres from the volume centre; ``x`` to the
patient's left, ``y`` posterior, ``z`` superior, as in DICOM's LPS) on the canonical array
layout ``(L, P, S)``, then reoriented to the requested voxel orientation. The anatomy scales
with the field of view (the scanner's reconstruction circle is fitted to the patient); tumour
sizes are in millimetres.

1. **Body.** Air (-1000 HU) outside an elliptic cylinder that tapers slightly towards the
   feet; a subcutaneous fat ring (-100 HU) 5 to 10 mm thick; soft tissue (~40 HU, muscle and
   bowel) inside with a smooth +-3 HU field, interleaved with visceral fat (-100 HU) where a
   smooth random field (about 14 mm lattice) is high: 20 to 30 % of the abdomen.
2. **Organs.** Lungs (~-850 HU) in the upper slices, a vertebral body (~700 HU) at the
   posterior midline, the aorta and the kidneys (~160 HU, portal-venous phase), the spleen
   (~50 HU), an elongated gallbladder (0 to 10 HU) below the liver, and the liver itself: a lobulated,
   left-tapering ellipsoid (55 to 68 HU, +-4 HU texture) with a few enhancing portal vessels
   (~160 HU, labelled liver). Organs painted later override earlier ones.
3. **Tumours.** One to four hypodense ellipsoids, 25 to 40 mm in diameter with random axis
   ratios and rotation, each with at least 2 mm of liver around it; and, in 40 % of the
   phantoms, one exophytic tumour near the liver surface with 20 to 50 % of it outside the
   liver, in soft tissue or visceral fat. Tumours are 30 to 40 HU below the liver (more if
   needed to stay at least 18 HU below soft tissue), with the liver's texture. A tumour that
   does not fit is shrunk by 15 % and retried (down to 10 mm) or dropped, so small fields of
   view get fewer, smaller tumours. Tumours never touch each other (not even diagonally, so
   each is one 26-connected lesion) nor the volume border.
4. **Image formation.** The piecewise-constant HU map is blurred by a Gaussian point spread
   (0.6 mm), then spatially correlated Gaussian noise (12 HU standard deviation) is added, and
   the result is rounded to int16 HU (``scl_slope`` 1, ``scl_inter`` 0), like reconstructed CT.

Labels are decided by the voxel centre: ``0`` background, ``1`` liver (parenchyma and its
vessels, without tumours), ``2`` tumour. All randomness comes from one NumPy generator seeded by
``seed``, so a phantom is a pure function of its arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import nibabel as nib
import numpy as np
import numpy.typing as npt
from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform
from scipy import ndimage

__all__ = [
    "CT_CLASS_COLOURS",
    "CT_CLASS_NAMES",
    "PhantomTruth",
    "ct_phantom_affine",
    "write_ct_phantom",
]

CT_CLASS_NAMES: tuple[str, ...] = ("background", "liver", "tumor")
"""Class names, indexed by label value."""

CT_CLASS_COLOURS: tuple[str, ...] = ("#000000", "#a6611a", "#e31a1c")
"""Display colours (``#rrggbb``), one per class in :data:`CT_CLASS_NAMES`."""

MIN_FIELD_OF_VIEW_MM: Final = 96.0
"""Smallest extent (shape x spacing) along each axis that still holds an abdomen."""

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]

_CENTRE_RAS: Final = (2.0, -18.0, -135.0)
"""World (RAS mm) position of the volume centre, like a table position of a real scan."""

_NOISE_HU: Final = 12.0
_PSF_MM: Final = 0.6
_NOISE_CORRELATION_VOXELS: Final = 0.5
_TUMOUR_MARGIN_MM: Final = 2.0
_MIN_TUMOUR_DIAMETER_MM: Final = 10.0
_PLACEMENT_ATTEMPTS: Final = 60

# Tissue indices of the tissue map; later tissues are painted over earlier ones.
(_AIR, _FAT, _SOFT, _VISCERAL_FAT, _LUNG, _KIDNEY, _SPLEEN, _LIVER, _VESSEL, _GALLBLADDER, _AORTA, _BONE, _TUMOUR) = (
    range(13)
)

_AXIS_CODES: Final = {"L": (0, 1.0), "R": (0, -1.0), "P": (1, 1.0), "A": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}
"""Code -> (patient LPS axis, sign along it)."""


@dataclass(frozen=True)
class PhantomTruth:
    """Ground truth of one phantom, for checking segmentations and volume reports.

    Attributes:
        tumour_volumes_ml: Volume of each tumour in mL, from the voxel count of its label
            (``2``) times the voxel volume; sums to the labelled tumour volume exactly.
        analytic_volumes_ml: Volume of each tumour's ellipsoid (``4/3 pi a b c``) in mL, for
            reference; it differs from the voxel volume by the discretisation only.
        tumour_in_liver: Per tumour, whether it lies wholly inside the liver (``False`` for
            the exophytic one).
        liver_volume_ml: Volume labelled liver (``1``, without tumours) in mL.
        voxel_volume_ml: Volume of one voxel in mL.
        affine: The NIfTI affine (voxel indices to RAS mm) as a 4 x 4 nested tuple.
    """

    tumour_volumes_ml: tuple[float, ...]
    analytic_volumes_ml: tuple[float, ...]
    tumour_in_liver: tuple[bool, ...]
    liver_volume_ml: float
    voxel_volume_ml: float
    affine: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        count = len(self.tumour_volumes_ml)
        if len(self.analytic_volumes_ml) != count or len(self.tumour_in_liver) != count:
            raise ValueError(f"per-tumour fields must have equal lengths, got {self}")

    @property
    def tumour_count(self) -> int:
        """Number of tumours; each is one 26-connected component of label ``2``."""
        return len(self.tumour_volumes_ml)

    @property
    def total_tumour_volume_ml(self) -> float:
        """Volume labelled tumour in mL."""
        return math.fsum(self.tumour_volumes_ml)


def write_ct_phantom(
    path: Path,
    seed: int,
    *,
    shape: tuple[int, int, int] = (160, 160, 64),
    spacing: tuple[float, float, float] = (0.8, 0.8, 2.5),
    orientation: str = "LPS",
    labels_path: Path | None = None,
) -> PhantomTruth:
    """Write a synthetic contrast-enhanced abdominal CT volume (and optionally its labels).

    The volume is a gzipped NIfTI-1 file of int16 Hounsfield units (``scl_slope`` 1) whose
    affine has the voxel ``spacing`` and the axis directions ``orientation``; the default,
    ``"LPS"``, is how DICOM-derived volumes are often stored, and permuted codes such as
    ``"PLS"`` or ``"SLP"`` reorder the axes of the same anatomy (see the module docstring).

    Args:
        path: Output NIfTI file, normally ``*.nii.gz``.
        seed: Non-negative seed; equal arguments give equal files.
        shape: Voxels along each array axis.
        spacing: Voxel size in mm along each array axis.
        orientation: Three axis codes, the direction each array axis points to in the
            patient: one of ``L``/``R``, one of ``P``/``A`` and one of ``S``/``I`` in any order.
        labels_path: If given, also write the label volume here (uint8 indices into
            :data:`CT_CLASS_NAMES`, same grid and affine).

    Returns:
        The true tumour volumes and the affine.

    Raises:
        ValueError: If the seed, shape, spacing or orientation is invalid, or the field of view
            is smaller than :data:`MIN_FIELD_OF_VIEW_MM` along an axis; the message names
            ``path``.
    """
    _check_arguments(path, seed, shape, spacing, orientation)
    to_canonical = ornt_transform(_ornt(orientation), _ornt("LPS"))  # type: ignore[no-untyped-call]
    order = [int(axis) for axis in to_canonical[:, 0]]
    source = [order.index(axis) for axis in range(3)]  # the stored axis of each canonical axis
    canonical_shape = (shape[source[0]], shape[source[1]], shape[source[2]])
    canonical_spacing = (spacing[source[0]], spacing[source[1]], spacing[source[2]])
    grid = _Grid.centred(canonical_shape, canonical_spacing)

    rng = np.random.default_rng([seed, 0x435450])  # "CTP"
    tissues, levels = _anatomy(grid, rng)
    tumours = _place_tumours(grid, tissues, rng)
    for tumour in tumours:
        tissues[tumour.region][tumour.mask] = _TUMOUR
    hu = _render(grid, tissues, levels, rng)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    labels[(tissues == _LIVER) | (tissues == _VESSEL)] = 1
    labels[tissues == _TUMOUR] = 2

    affine = ct_phantom_affine(shape, spacing, orientation)
    from_canonical = ornt_transform(_ornt("LPS"), _ornt(orientation))  # type: ignore[no-untyped-call]
    stored_hu = apply_orientation(hu, from_canonical)  # type: ignore[no-untyped-call]
    _save(path, stored_hu, affine, f"geoseg CT phantom seed {seed}")
    if labels_path is not None:
        stored_labels = apply_orientation(labels, from_canonical)  # type: ignore[no-untyped-call]
        _save(labels_path, stored_labels, affine, "geoseg CT phantom labels")

    voxel_ml = grid.voxel_volume_mm3 / 1000.0
    return PhantomTruth(
        tumour_volumes_ml=tuple(int(t.mask.sum()) * voxel_ml for t in tumours),
        analytic_volumes_ml=tuple(t.analytic_volume_mm3 / 1000.0 for t in tumours),
        tumour_in_liver=tuple(t.in_liver for t in tumours),
        liver_volume_ml=int((labels == 1).sum()) * voxel_ml,
        voxel_volume_ml=voxel_ml,
        affine=tuple(tuple(float(v) for v in row) for row in affine),
    )


def ct_phantom_affine(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], orientation: str = "LPS"
) -> FloatArray:
    """The NIfTI affine (voxel indices to RAS mm) of a phantom grid; see :func:`write_ct_phantom`.

    Raises:
        ValueError: If ``orientation`` is not three axis codes such as ``"LPS"``.
    """
    problem = _orientation_problem(orientation)
    if problem:
        raise ValueError(problem)
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    for axis, code in enumerate(orientation):
        patient_axis, sign = _AXIS_CODES[code]
        ras_sign = -sign if patient_axis < 2 else sign  # RAS flips the L and P directions
        affine[patient_axis, axis] = ras_sign * spacing[axis]
    centre_index = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    affine[:3, 3] = np.asarray(_CENTRE_RAS) - affine[:3, :3] @ centre_index
    return affine


def _check_arguments(
    path: Path, seed: int, shape: tuple[int, int, int], spacing: tuple[float, float, float], orientation: str
) -> None:
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed} for {path}")
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive voxel counts, got {shape} for {path}")
    if len(spacing) != 3 or not all(s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive sizes in mm, got {spacing} for {path}")
    problem = _orientation_problem(orientation)
    if problem:
        raise ValueError(f"{problem} for {path}")
    extent = [n * s for n, s in zip(shape, spacing, strict=True)]
    if min(extent) < MIN_FIELD_OF_VIEW_MM:
        raise ValueError(
            f"field of view (shape x spacing) must be >= {MIN_FIELD_OF_VIEW_MM} mm along every axis, "
            f"got {[round(e, 1) for e in extent]} mm for {path}; increase the shape or the spacing"
        )


def _orientation_problem(orientation: str) -> str:
    """Why ``orientation`` is not a valid code, or ``""``."""
    codes = [_AXIS_CODES.get(code) for code in orientation]
    if len(orientation) != 3 or None in codes or len({c[0] for c in codes if c}) != 3:
        return f"orientation must be one of L/R, P/A and S/I in some order (e.g. 'LPS'), got {orientation!r}"
    return ""


@dataclass(frozen=True)
class _Grid:
    """The canonical ``(L, P, S)`` voxel grid: 1D patient coordinates (mm) along each axis."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    axes: tuple[FloatArray, FloatArray, FloatArray] = field(repr=False)

    @classmethod
    def centred(cls, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> _Grid:
        x, y, z = (
            (np.arange(n, dtype=np.float64) - (n - 1) / 2.0) * np.float64(s)
            for n, s in zip(shape, spacing, strict=True)
        )
        return cls(shape, spacing, (x, y, z))

    @property
    def fov(self) -> FloatArray:
        """Extent in mm along ``x`` (left), ``y`` (posterior) and ``z`` (superior)."""
        extent: FloatArray = np.asarray(self.shape, dtype=np.float64) * np.asarray(self.spacing)
        return extent

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    def points(self, region: tuple[slice, ...] = (slice(None),) * 3) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Broadcastable ``x, y, z`` coordinates of the voxels of ``region``."""
        x, y, z = (axis[part] for axis, part in zip(self.axes, region, strict=True))
        return x[:, None, None], y[None, :, None], z[None, None, :]

    def box(self, centre: FloatArray, radius: float) -> tuple[slice, ...] | None:
        """Voxels within ``radius`` mm of ``centre`` per axis, or ``None`` if that leaves the grid."""
        region = []
        for axis, c in zip(self.axes, centre, strict=True):
            lo, hi = np.searchsorted(axis, [c - radius, c + radius])
            if lo == 0 or hi >= len(axis):
                return None
            region.append(slice(int(lo), int(hi)))
        return tuple(region)


@dataclass(frozen=True)
class _Ellipsoid:
    centre: FloatArray
    semi_axes: FloatArray
    rotation: FloatArray  # columns: the ellipsoid's axes in the patient frame

    def radius2(self, grid: _Grid, region: tuple[slice, ...] = (slice(None),) * 3) -> FloatArray:
        """Squared normalised radius (``<= 1`` inside) at the voxels of ``region``."""
        offsets = [p - c for p, c in zip(grid.points(region), self.centre, strict=True)]
        total: FloatArray = np.zeros(1)
        for k in range(3):
            along = sum(offsets[j] * self.rotation[j, k] for j in range(3))
            total = total + (along / self.semi_axes[k]) ** 2
        return total

    def grown(self, margin: float) -> _Ellipsoid:
        return _Ellipsoid(self.centre, self.semi_axes + margin, self.rotation)


@dataclass(frozen=True, eq=False)
class _Tumour:
    """A placed tumour: its voxels (``mask`` within ``region`` of the canonical grid)."""

    region: tuple[slice, ...]
    mask: BoolArray
    analytic_volume_mm3: float
    in_liver: bool


def _anatomy(grid: _Grid, rng: np.random.Generator) -> tuple[npt.NDArray[np.int8], FloatArray]:
    """The tissue map (canonical layout) and the HU level of each tissue index for one patient."""
    fx, fy, fz = grid.fov
    x, y, z = grid.points()
    tissues = np.full(grid.shape, _AIR, dtype=np.int8)
    taper = 1.0 + 0.05 * z / fz
    bx, by, body_y = 0.45 * fx * rng.uniform(0.96, 1.04), 0.38 * fy * rng.uniform(0.95, 1.05), 0.02 * fy
    tissues[((x / (bx * taper)) ** 2 + ((y - body_y) / (by * taper)) ** 2 <= 1)] = _FAT
    tx, ty = rng.uniform(5.0, 10.0, size=2)
    inner = (x / (bx * taper - tx)) ** 2 + ((y - body_y) / (by * taper - ty)) ** 2 <= 1
    tissues[inner] = _SOFT
    # Visceral fat between the organs and bowel loops: where a smooth field is high.
    visceral = _smooth_field(rng, grid.shape, _cells(grid, 14.0), 1.0) > rng.uniform(0.5, 0.8)
    tissues[visceral & inner] = _VISCERAL_FAT

    for side in (-1.0, 1.0):
        lung = _axis_ellipsoid((side * 0.2 * fx, 0.04 * fy, 0.5 * fz), (0.17 * fx, 0.26 * fy, 0.32 * fz), rng, 0.06)
        _paint(tissues, grid, lung, _LUNG, within=inner)
    for side in (-1.0, 1.0):
        kidney = _axis_ellipsoid((side * 0.22 * fx, 0.2 * fy, -0.28 * fz), (0.07 * fx, 0.09 * fy, 0.16 * fz), rng, 0.1)
        _paint(tissues, grid, kidney, _KIDNEY, within=inner)
    spleen = _axis_ellipsoid((0.3 * fx, 0.12 * fy, 0.1 * fz), (0.09 * fx, 0.13 * fy, 0.17 * fz), rng, 0.1)
    _paint(tissues, grid, spleen, _SPLEEN, within=inner)

    liver_shape, liver = _liver(grid, rng)
    liver &= inner
    tissues[liver] = _LIVER
    _paint_vessels(tissues, grid, liver, liver_shape, rng)
    _paint(tissues, grid, _gallbladder(rng, grid.fov), _GALLBLADDER, within=inner)
    aorta = ((x - 0.07 * fx) / (0.055 * fx)) ** 2 + ((y - 0.13 * fy) / (0.055 * fx)) ** 2 <= 1
    tissues[np.broadcast_to(aorta, grid.shape) & inner] = _AORTA
    spine = (x / (0.085 * fx)) ** 2 + ((y - 0.27 * fy) / (0.075 * fy)) ** 2 <= 1
    tissues[np.broadcast_to(spine, grid.shape) & inner] = _BONE

    liver_hu = rng.uniform(55.0, 68.0)
    levels = np.zeros(_TUMOUR + 1)
    levels[[_AIR, _FAT, _SOFT, _LUNG, _KIDNEY, _SPLEEN, _LIVER]] = [
        -1000.0,
        rng.uniform(-110.0, -90.0),
        rng.uniform(35.0, 45.0),
        rng.uniform(-870.0, -830.0),
        rng.uniform(150.0, 180.0),
        rng.uniform(45.0, 55.0),
        liver_hu,
    ]
    levels[[_VESSEL, _GALLBLADDER, _AORTA, _BONE]] = [rng.uniform(150.0, 180.0), rng.uniform(0.0, 10.0), 170.0, 700.0]
    levels[_VISCERAL_FAT] = levels[_FAT]
    # Hypodense to the liver, and at least 18 HU below soft tissue so exophytic parts show.
    levels[_TUMOUR] = min(liver_hu - rng.uniform(30.0, 40.0), levels[_SOFT] - 18.0)
    return tissues, levels


def _liver(grid: _Grid, rng: np.random.Generator) -> tuple[_Ellipsoid, BoolArray]:
    """The liver: its ellipsoid, and its mask, lobulated and tapering towards the patient's left."""
    fx, fy, fz = grid.fov
    centre = np.array([-0.16 * fx, -0.03 * fy, 0.08 * fz]) + rng.uniform(-0.02, 0.02, 3) * grid.fov
    semi = np.array([0.3 * fx, 0.27 * fy, 0.34 * fz]) * rng.uniform(0.92, 1.08, 3)
    liver = _Ellipsoid(centre, semi, _rotation_about_z(rng.uniform(-0.25, 0.25)))
    x, y, z = grid.points()
    u, v, w = (x - centre[0]) / semi[0], (y - centre[1]) / semi[1], (z - centre[2]) / semi[2]
    lobes = rng.normal(0.0, 1.0, 4)
    bulge = 0.06 * (lobes[0] * np.sin(2.5 * u + lobes[1]) + lobes[2] * np.cos(2.0 * w + lobes[3]) * v)
    left_taper = 1.0 - 0.4 * np.clip(u, 0.0, None)
    radius2 = liver.radius2(grid) + (v**2) * (1.0 / left_taper**2 - 1.0)
    mask: BoolArray = radius2 <= (1.0 + bulge) ** 2
    return liver, mask


def _paint_vessels(
    tissues: npt.NDArray[np.int8], grid: _Grid, liver: BoolArray, shape: _Ellipsoid, rng: np.random.Generator
) -> None:
    """Enhancing portal vein branches: tubes fanning out from the hilum, clipped to the liver."""
    hilum = shape.centre + np.array([0.35, 0.1, -0.25]) * shape.semi_axes
    x, y, z = grid.points()
    for _ in range(int(rng.integers(4, 8))):
        direction = rng.normal(size=3) * shape.semi_axes + np.array([-0.5, 0.0, 0.2]) * shape.semi_axes
        direction /= np.linalg.norm(direction)
        radius, length = rng.uniform(1.8, 3.5), rng.uniform(0.6, 1.0) * float(shape.semi_axes.max())
        along = (x - hilum[0]) * direction[0] + (y - hilum[1]) * direction[1] + (z - hilum[2]) * direction[2]
        t = np.clip(along, 0.0, length)
        distance2 = (x - hilum[0] - t * direction[0]) ** 2 + (y - hilum[1] - t * direction[1]) ** 2
        distance2 = distance2 + (z - hilum[2] - t * direction[2]) ** 2
        tissues[(distance2 <= radius**2) & liver] = _VESSEL


def _place_tumours(grid: _Grid, tissues: npt.NDArray[np.int8], rng: np.random.Generator) -> list[_Tumour]:
    """Place 1-4 tumours inside the liver and maybe one exophytic one (module docstring, step 3)."""
    count, exophytic = int(rng.integers(1, 5)), bool(rng.random() < 0.4)
    liver = (tissues == _LIVER) | (tissues == _VESSEL)
    free = liver.copy()  # liver not yet taken by a tumour
    surface = liver & ~ndimage.binary_erosion(liver)
    inside_candidates = np.flatnonzero(liver)
    surface_candidates = np.flatnonzero(surface)
    tumours: list[_Tumour] = []
    for index in range(count + int(exophytic)):
        outside = index == count
        diameter = rng.uniform(25.0, 40.0)
        while diameter >= _MIN_TUMOUR_DIAMETER_MM:
            candidates = surface_candidates if outside else inside_candidates
            tumour = _try_place(grid, tissues, free, candidates, diameter, outside, rng)
            if tumour is not None:
                tumours.append(tumour)
                free[tumour.region][tumour.mask] = False
                break
            diameter *= 0.85
    return tumours


def _try_place(
    grid: _Grid,
    tissues: npt.NDArray[np.int8],
    free: BoolArray,
    candidates: npt.NDArray[np.intp],
    diameter: float,
    outside: bool,
    rng: np.random.Generator,
) -> _Tumour | None:
    for _ in range(_PLACEMENT_ATTEMPTS):
        voxel = np.unravel_index(int(candidates[rng.integers(len(candidates))]), grid.shape)
        centre = np.array([axis[i] for axis, i in zip(grid.axes, voxel, strict=True)])
        ratios = rng.uniform(0.8, 1.2, 3)
        semi = 0.5 * diameter * ratios / np.cbrt(ratios.prod())
        ellipsoid = _Ellipsoid(centre, semi, _random_rotation(rng))
        region = grid.box(centre, float(semi.max()) + _TUMOUR_MARGIN_MM + 2 * max(grid.spacing))
        if region is None:
            continue
        mask = ellipsoid.radius2(grid, region) <= 1.0
        # The margin in mm, and at least one voxel (26-neighbours) however thick the slices.
        halo = (ellipsoid.grown(_TUMOUR_MARGIN_MM).radius2(grid, region) <= 1.0) | ndimage.binary_dilation(
            mask, structure=np.ones((3, 3, 3), dtype=bool)
        )
        if outside:
            local = tissues[region]
            allowed = free[region] | (local == _SOFT) | (local == _VISCERAL_FAT)
            in_liver_fraction = free[region][mask].mean()
            if not (allowed[halo].all() and 0.5 <= in_liver_fraction <= 0.8):
                continue
        elif not free[region][halo].all():
            continue
        volume = 4.0 / 3.0 * math.pi * float(semi.prod())
        return _Tumour(region, mask, volume, in_liver=not outside)
    return None


def _render(
    grid: _Grid, tissues: npt.NDArray[np.int8], levels: FloatArray, rng: np.random.Generator
) -> npt.NDArray[np.int16]:
    """HU image: tissue levels plus textures, blurred, plus correlated noise, rounded to int16."""
    hu = levels[tissues].astype(np.float32)
    soft_field = _smooth_field(rng, grid.shape, _cells(grid, 25.0), 3.0)
    liver_field = _smooth_field(rng, grid.shape, _cells(grid, 15.0), 4.0)
    hu += np.where(tissues == _SOFT, soft_field, np.float32(0))
    hu += np.where((tissues == _LIVER) | (tissues == _TUMOUR), liver_field, np.float32(0))
    hu += np.where(tissues == _LUNG, np.float32(3) * soft_field, np.float32(0))
    psf = [_PSF_MM / s for s in grid.spacing]
    hu = ndimage.gaussian_filter(hu, psf, truncate=3.0)
    noise = rng.standard_normal(grid.shape, dtype=np.float32)
    correlation = (_NOISE_CORRELATION_VOXELS, _NOISE_CORRELATION_VOXELS, 0.0)
    noise = ndimage.gaussian_filter(noise, correlation, truncate=3.0)
    hu += noise * np.float32(_NOISE_HU / float(noise.std()))
    stored: npt.NDArray[np.int16] = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return stored


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int, int], cells: tuple[int, int, int], std: float
) -> npt.NDArray[np.float32]:
    """A smooth random field with standard deviation ``std`` (cubic zoom of a coarse lattice)."""
    coarse = rng.standard_normal(cells)
    fine = ndimage.zoom(coarse, [n / c for n, c in zip(shape, cells, strict=True)], order=3, mode="mirror")
    fine = fine[: shape[0], : shape[1], : shape[2]]
    if fine.shape != shape:
        fine = np.pad(fine, [(0, n - f) for n, f in zip(shape, fine.shape, strict=True)], mode="edge")
    scaled: npt.NDArray[np.float32] = (fine * (std / max(float(fine.std()), 1e-6))).astype(np.float32)
    return scaled


def _cells(grid: _Grid, size_mm: float) -> tuple[int, int, int]:
    """Coarse lattice for :func:`_smooth_field` with a node every ``size_mm`` (at least 2 per axis)."""
    cells = [max(2, round(extent / size_mm)) for extent in grid.fov]
    return cells[0], cells[1], cells[2]


def _paint(
    tissues: npt.NDArray[np.int8], grid: _Grid, ellipsoid: _Ellipsoid, tissue: int, *, within: BoolArray
) -> None:
    tissues[(ellipsoid.radius2(grid) <= 1.0) & within] = tissue


def _axis_ellipsoid(
    centre: tuple[float, float, float], semi: tuple[float, float, float], rng: np.random.Generator, scale: float
) -> _Ellipsoid:
    """An axis-aligned ellipsoid with centre and semi-axes jittered by ``scale`` (relative)."""
    semi_axes = np.asarray(semi) * rng.uniform(1.0 - scale, 1.0 + scale, 3)
    offset = rng.uniform(-scale, scale, 3) * semi_axes
    return _Ellipsoid(np.asarray(centre) + offset, semi_axes, np.eye(3))


def _gallbladder(rng: np.random.Generator, fov: FloatArray) -> _Ellipsoid:
    """An elongated, mostly cranio-caudal ellipsoid (8-12 x 8-12 x 18-26 mm) below the liver."""
    centre = np.array([-0.05, -0.2, -0.2]) * fov + rng.uniform(-1.0, 1.0, 3) * np.array([0.02, 0.02, 0.03]) * fov
    semi_axes = np.array([rng.uniform(8.0, 12.0), rng.uniform(8.0, 12.0), rng.uniform(18.0, 26.0)])
    tilt_x, tilt_z = rng.uniform(-0.5, 0.5, 2)
    c, s = math.cos(tilt_x), math.sin(tilt_x)
    about_x = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return _Ellipsoid(centre, semi_axes, _rotation_about_z(tilt_z) @ about_x)


def _random_rotation(rng: np.random.Generator) -> FloatArray:
    """A uniformly random proper rotation matrix (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _rotation_about_z(angle: float) -> FloatArray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _ornt(codes: str) -> npt.NDArray[np.float64]:
    """nibabel's orientation array of axis codes such as ``"LPS"``."""
    ornt: npt.NDArray[np.float64] = axcodes2ornt(tuple(codes))  # type: ignore[no-untyped-call]
    return ornt


def _save(path: Path, data: npt.NDArray[np.generic], affine: FloatArray, description: str) -> None:
    """Write ``data`` unscaled (``scl_slope`` 1, ``scl_inter`` 0) with ``affine`` as sform and qform."""
    image = nib.Nifti1Image(np.ascontiguousarray(data), affine)  # type: ignore[no-untyped-call]
    header = image.header
    header.set_data_dtype(data.dtype)  # type: ignore[no-untyped-call]
    header.set_xyzt_units("mm", "sec")  # type: ignore[no-untyped-call]
    header["descrip"] = description.encode("ascii")[:79]
    image.set_sform(affine, code=1)  # type: ignore[no-untyped-call]  # scanner anatomical
    image.set_qform(affine, code=1)  # type: ignore[no-untyped-call]
    header.set_slope_inter(1.0, 0.0)  # type: ignore[no-untyped-call]
    nib.save(image, path)
