"""Resampling between a volume's grid and a model's voxel spacing. Pure geometry plus a source
wrapper that resamples window by window; no whole-volume pass.

The grid convention is MONAI's ``Spacing`` (``scale_extent=False``, its default): the first voxel
centre keeps its place in the scanner, model voxel ``i`` along an axis lies at input index
``i * t / z`` (``z`` the input's voxel size, ``t`` the model's), and the resampled axis has
``round((n - 1) * z / t + 1)`` voxels (NumPy's round, half to even, as MONAI). Applied after
reorientation, so ``z`` and ``t`` are in the model's axis order.

* **Into model space (images):** linear interpolation, separable along the three axes
  (trilinear), border padding, as ``Spacing(mode="bilinear", padding_mode="border")``. A model
  window reads only the input box its sample points fall in, plus one voxel.
* **Back to the input grid (labels):** nearest neighbour on the label volume: input voxel ``j``
  takes model voxel ``round(j * z / t)``. We map *labels*, not logits: the model-space labels
  are one byte per voxel, held in a scratch file and read back slab by slab, whereas resampled
  logits would need ``classes × 4`` bytes per model voxel and a second blend. The price is
  that a boundary on the input grid is as coarse as the model's spacing; on the usual case of a
  finer input grid the two differ only in voxels at class borders.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .geometry import Window


@dataclass(frozen=True)
class SpacingMap:
    """How a model-spacing grid lies on an input grid (both in model axis order).

    Attributes:
        input_shape: voxels along each axis of the (reoriented) input.
        input_zooms: the input's voxel size in mm along each axis.
        target: the model's voxel size in mm along each axis.
        affine: the reoriented input's voxel-to-world affine (rows of 4), when known: the
            resampled shape is then MONAI's to the last bit (its corners go through the affine,
            which decides how a length of exactly ``k + 0.5`` voxels rounds).
    """

    input_shape: tuple[int, int, int]
    input_zooms: tuple[float, float, float]
    target: tuple[float, float, float]
    affine: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        for name, values in (("input voxel size", self.input_zooms), ("target spacing", self.target)):
            if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
                raise ValueError(f"{name} must be 3 positive numbers, got {list(values)}")

    @property
    def step(self) -> tuple[float, float, float]:
        """Input voxels per model voxel along each axis (``t / z``)."""
        a, b, c = (t / z for t, z in zip(self.target, self.input_zooms, strict=True))
        return (a, b, c)

    @property
    def model_shape(self) -> tuple[int, int, int]:
        """The resampled shape: ``round((n - 1) * z / t + 1)`` per axis, computed as MONAI's
        ``Spacing`` does (``zoom_affine`` and ``compute_shape_offset``)."""
        affine = np.diag([*self.input_zooms, 1.0]) if self.affine is None else np.asarray(self.affine, float)
        a, b, c = monai_spacing_shape(self.input_shape, affine, self.target)
        return (a, b, c)

    @property
    def identity(self) -> bool:
        """Whether the target spacing equals the input's (to 1e-6 relative)."""
        return all(abs(s - 1.0) <= 1e-6 for s in self.step)

    def sample_points(self, axis: int, start: int, size: int) -> np.ndarray:
        """Input indices (float64) of model voxels ``start .. start + size - 1`` along ``axis``,
        clamped to the input (border padding)."""
        pos = (start + np.arange(size, dtype=np.float64)) * self.step[axis]
        return np.clip(pos, 0.0, self.input_shape[axis] - 1)

    def input_window(self, window: Window) -> Window:
        """The input box a model-space window's sample points fall in (one voxel of margin
        above for the linear interpolation)."""
        start, size = [], []
        for a in range(3):
            pts = self.sample_points(a, window.start[a], window.size[a])
            lo = int(np.floor(pts[0]))
            hi = min(int(np.floor(pts[-1])) + 2, self.input_shape[a])
            start.append(lo)
            size.append(hi - lo)
        return Window(tuple(start), tuple(size))

    def nearest_model_index(self, axis: int, start: int, size: int) -> np.ndarray:
        """For input voxels ``start .. start + size - 1`` along ``axis``, the nearest model voxel."""
        pos = (start + np.arange(size, dtype=np.float64)) / self.step[axis]
        return np.clip(np.floor(pos + 0.5).astype(np.int64), 0, self.model_shape[axis] - 1)


def monai_spacing_shape(
    shape: Sequence[int], affine: np.ndarray, target: Sequence[float]
) -> tuple[int, ...]:
    """The shape MONAI's ``Spacing(pixdim=target)`` gives an image of ``shape`` and ``affine``
    (``zoom_affine`` without shear, then the extent of the corners in the new grid, rounded
    half to even), reproduced in numpy's order of operations."""
    d = len(shape)
    rzs = affine[:d, :d]
    zs = np.linalg.cholesky(rzs.T @ rzs).T
    rotation = rzs @ np.linalg.inv(zs)
    out = np.eye(d + 1)
    out[:d, :d] = rotation @ np.diag(np.sign(np.diag(zs)) * np.abs(np.asarray(target, float)))
    coords = [(0.0, float(n) - 1.0) for n in shape]
    corners = np.asarray(np.meshgrid(*coords, indexing="ij")).reshape((d, -1))
    corners = np.concatenate((corners, np.ones_like(corners[:1])))
    corners_out = np.linalg.solve(out, affine) @ corners
    corners_out = corners_out[:-1] / corners_out[-1]
    return tuple(int(v) for v in np.round(np.ptp(corners_out, axis=1) + 1.0))


def spacing_map(
    shape: Sequence[int], zooms: Sequence[float], target: Sequence[float] | None,
    affine: np.ndarray | None = None,
) -> SpacingMap | None:
    """The map to ``target`` spacing, or ``None`` when none is set or it equals the input's.
    ``affine`` is the reoriented input's (it fixes how exact halves round, as in MONAI)."""
    if target is None:
        return None
    smap = SpacingMap(
        (int(shape[0]), int(shape[1]), int(shape[2])),
        (float(zooms[0]), float(zooms[1]), float(zooms[2])),
        (float(target[0]), float(target[1]), float(target[2])),
        None if affine is None else tuple(tuple(float(v) for v in row) for row in np.asarray(affine)[:4, :4]),
    )
    return None if smap.identity else smap


def interpolate_linear(data: np.ndarray, box: Window, points: Sequence[np.ndarray]) -> np.ndarray:
    """Sample ``data`` (``(channels, *box.size)``, read at ``box``) at input indices ``points``
    (one float array per spatial axis, within the box): separable linear interpolation."""
    out = data.astype(np.float32, copy=False)
    for a, pts in enumerate(points):
        local = pts - box.start[a]
        lo = np.floor(local).astype(np.int64)
        hi = np.minimum(lo + 1, box.size[a] - 1)
        frac = (local - lo).astype(np.float32)
        shape = [1] * out.ndim
        shape[a + 1] = frac.size
        frac = frac.reshape(shape)
        lower = np.take(out, lo, axis=a + 1)
        upper = np.take(out, hi, axis=a + 1)
        out = lower + (upper - lower) * frac
    return np.ascontiguousarray(out)


class ResampledVolume:
    """A volume source presented on a model-spacing grid (wraps any ``VolumeSource``, usually
    an :class:`~geoseg_pipeline.orientation.OrientedVolume`)."""

    def __init__(self, source: object, smap: SpacingMap) -> None:
        self._src = source
        self.smap = smap
        self.path: str = getattr(source, "path", "")

    def read(self, window: Window, channels: Sequence[int] | None = None) -> np.ndarray:
        """Read a model-space window (channels first), linearly interpolated."""
        box = self.smap.input_window(window)
        data = np.asarray(self._src.read(box, channels))  # type: ignore[attr-defined]
        points = [self.smap.sample_points(a, window.start[a], window.size[a]) for a in range(3)]
        return interpolate_linear(data, box, points)

    def close(self) -> None:
        """Close the wrapped source."""
        self._src.close()  # type: ignore[attr-defined]


__all__ = ["ResampledVolume", "SpacingMap", "interpolate_linear", "monai_spacing_shape", "spacing_map"]
