"""Voxel grids of 3D volume items: a frozen value object and pure math, no I/O.

A :class:`VolumeGrid` is the voxel lattice of one volume as stored on disk (axes ``i, j, k`` in
the order of nibabel's ``dataobj``, nothing reoriented) with its 4x4 affine mapping voxel
indices to world millimetres. For NIfTI the world is the scanner's RAS+ space of nibabel
(``sform``/``qform`` as chosen by nibabel's ``get_best_affine``); the codes are carried so that
a label map written for the item can repeat them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: ``|det(A)| / prod(column norms)`` below this is a degenerate (non-invertible) affine.
_MIN_RELATIVE_DET = 1e-12


@dataclass(frozen=True)
class VolumeGrid:
    """The voxel lattice of one volume item with its affine.

    Attributes:
        shape: voxel array shape as on disk, ``(i, j, k)``.
        affine: 4x4 voxel-index -> world (mm) matrix; stored as a read-only float64 copy.
            Equality and hashing use its values (through ``affine_key``).
        sform_code: NIfTI ``sform_code`` of the item (0 unknown, 1 scanner, 2 aligned, ...).
        qform_code: NIfTI ``qform_code`` of the item.

    Raises:
        ValueError: in the constructor, for a shape that is not three positive sizes or an
            affine that is not a finite, invertible 4x4 matrix with last row ``0 0 0 1``.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray = field(compare=False)
    sform_code: int = 2
    qform_code: int = 0
    affine_key: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape)
        if len(shape) != 3 or any(n < 1 for n in shape):
            raise ValueError(f"VolumeGrid shape must be three sizes >= 1, got {self.shape}")
        object.__setattr__(self, "shape", shape)
        affine = _checked_affine(self.affine)
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "affine_key", tuple(float(v) for v in affine.ravel()))

    @property
    def zooms(self) -> tuple[float, float, float]:
        """Voxel sizes in mm along ``i, j, k`` (the norms of the affine's first three columns)."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(norms[0]), float(norms[1]), float(norms[2]))

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm³: ``|det(affine[:3, :3])|`` (exact for sheared grids too)."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    @property
    def voxel_count(self) -> int:
        """Number of voxels."""
        return math.prod(self.shape)

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Anatomical direction each voxel axis points to, e.g. ``('L', 'A', 'S')`` (nibabel)."""
        import nibabel as nib  # imported when asked: the raster tools do without it

        codes = nib.aff2axcodes(self.affine)  # type: ignore[no-untyped-call]
        return (str(codes[0]), str(codes[1]), str(codes[2]))

    def world(self, ijk: np.ndarray | Sequence[float]) -> np.ndarray:
        """World coordinates (mm) of voxel indices ``ijk`` (shape ``(..., 3)``, fractional allowed)."""
        pts = np.asarray(ijk, dtype=np.float64)
        if pts.shape[-1:] != (3,):
            raise ValueError(f"voxel indices must have a last axis of 3, got shape {pts.shape}")
        out: np.ndarray = pts @ self.affine[:3, :3].T + self.affine[:3, 3]
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {"shape": self.shape, "affine": self.affine.tolist(), "sform_code": self.sform_code,
                "qform_code": self.qform_code}

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "shape", tuple(state["shape"]))
        object.__setattr__(self, "sform_code", state["sform_code"])
        object.__setattr__(self, "qform_code", state["qform_code"])
        affine = _checked_affine(state["affine"])
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "affine_key", tuple(float(v) for v in affine.ravel()))


def _checked_affine(value: Any) -> np.ndarray:
    """A read-only float64 copy of ``value`` after checking it is a usable voxel->world affine."""
    try:
        affine = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"VolumeGrid affine must be a 4x4 matrix of numbers: {exc}") from exc
    if affine.shape != (4, 4):
        raise ValueError(f"VolumeGrid affine must be 4x4, got shape {affine.shape}")
    if not np.all(np.isfinite(affine)):
        raise ValueError(f"VolumeGrid affine has non-finite values:\n{affine}")
    if not np.allclose(affine[3], (0.0, 0.0, 0.0, 1.0)):
        raise ValueError(f"VolumeGrid affine's last row must be [0, 0, 0, 1], got {affine[3].tolist()}")
    linear = affine[:3, :3]
    norms = np.linalg.norm(linear, axis=0)
    det = abs(float(np.linalg.det(linear)))
    scale = float(np.prod(norms))
    if scale == 0.0 or det <= _MIN_RELATIVE_DET * scale:
        raise ValueError(
            f"VolumeGrid affine is not invertible (|det| = {det:.3g}, voxel sizes {norms.tolist()}):\n{affine}"
        )
    affine.setflags(write=False)
    return affine
