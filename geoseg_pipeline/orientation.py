"""Reorientation between a volume's on-disk voxel axes and a model's axis codes: a pure
permutation and flips (no resampling), so that mapping back is exact. No I/O.

Model axis ``m`` is on-disk axis ``perm[m]``, reversed when ``flip[m]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from nibabel.orientations import axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

from .geometry import Window


@dataclass(frozen=True)
class AxisMap:
    """How a model-space grid lies on the on-disk grid."""

    perm: tuple[int, int, int]
    flip: tuple[bool, bool, bool]
    disk_shape: tuple[int, int, int]

    @property
    def model_shape(self) -> tuple[int, int, int]:
        """The volume's shape in model axis order."""
        a, b, c = (self.disk_shape[p] for p in self.perm)
        return (a, b, c)

    @property
    def identity(self) -> bool:
        """Whether model and disk axes coincide."""
        return self.perm == (0, 1, 2) and not any(self.flip)

    def model_affine(self, affine: np.ndarray) -> np.ndarray:
        """The voxel-to-world affine of the model-space grid (as MONAI's ``Orientation`` gives:
        ``affine @ inv_ornt_aff``)."""
        ornt = np.zeros((3, 2))
        for m, d in enumerate(self.perm):
            ornt[d] = (m, -1.0 if self.flip[m] else 1.0)
        inv = inv_ornt_aff(ornt, self.disk_shape)  # type: ignore[no-untyped-call]
        return np.asarray(np.asarray(affine, dtype=float) @ inv)

    def to_disk_window(self, window: Window) -> Window:
        """The on-disk window holding a model-space window."""
        start = [0, 0, 0]
        size = [0, 0, 0]
        for m, d in enumerate(self.perm):
            s, n = window.start[m], window.size[m]
            start[d] = self.disk_shape[d] - (s + n) if self.flip[m] else s
            size[d] = n
        return Window(tuple(start), tuple(size))

    def to_model_array(self, data: np.ndarray) -> np.ndarray:
        """Disk-ordered spatial axes (the last three) -> model order."""
        lead = data.ndim - 3
        out = np.transpose(data, (*range(lead), *(lead + p for p in self.perm)))
        flips = tuple(lead + m for m in range(3) if self.flip[m])
        return np.ascontiguousarray(np.flip(out, flips) if flips else out)

    def to_disk_array(self, data: np.ndarray) -> np.ndarray:
        """Model-ordered spatial axes (the last three) -> disk order."""
        lead = data.ndim - 3
        flips = tuple(lead + m for m in range(3) if self.flip[m])
        out = np.flip(data, flips) if flips else data
        inverse = [0, 0, 0]
        for m, d in enumerate(self.perm):
            inverse[d] = m
        return np.ascontiguousarray(np.transpose(out, (*range(lead), *(lead + i for i in inverse))))


def axis_map(affine: np.ndarray, disk_shape: Sequence[int], axcodes: str | None) -> AxisMap:
    """The map that presents a volume in ``axcodes`` (e.g. ``"RAS"``); identity for ``None``."""
    shape = (int(disk_shape[0]), int(disk_shape[1]), int(disk_shape[2]))
    if axcodes is None:
        return AxisMap((0, 1, 2), (False, False, False), shape)
    # ornt[d] = (model axis of disk axis d, -1 when reversed)
    ornt = ornt_transform(io_orientation(affine), axcodes2ornt(tuple(axcodes)))  # type: ignore[no-untyped-call]
    perm = [0, 0, 0]
    flip = [False, False, False]
    for d, (m, direction) in enumerate(ornt):
        perm[int(m)] = d
        flip[int(m)] = bool(direction < 0)
    return AxisMap((perm[0], perm[1], perm[2]), (flip[0], flip[1], flip[2]), shape)


class OrientedVolume:
    """A volume source presented in model axis order (wraps any ``VolumeSource``)."""

    def __init__(self, source: object, amap: AxisMap) -> None:
        self._src = source
        self.amap = amap
        self.path: str = getattr(source, "path", "")

    def read(self, window: Window, channels: Sequence[int] | None = None) -> np.ndarray:
        """Read a model-space window (channels first)."""
        data = self._src.read(self.amap.to_disk_window(window), channels)  # type: ignore[attr-defined]
        return self.amap.to_model_array(np.asarray(data))

    def close(self) -> None:
        """Close the wrapped source."""
        self._src.close()  # type: ignore[attr-defined]
