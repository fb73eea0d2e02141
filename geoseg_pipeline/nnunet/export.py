"""nnU-Net v2's export of a prediction, streamed: the blended logits (in the preprocessed grid)
resampled back to the cropped case as ``resample_data_or_seg_to_shape`` does, turned into labels
(argmax, or regions in ``regions_class_order``), put back into the uncropped case and transposed
back, one slab at a time, so that ``heads x volume`` logits are never held at once.

nnU-Net's probabilities resampling is scikit-image ``resize`` of order 1 (order 0 along an
anisotropic axis): per axis a linear (or nearest) interpolation at ``(o + 0.5) * n_in / n_out -
0.5``, clamped at the edges, which is separable and local. It keeps the logits' dtype (float16:
nnU-Net accumulates them in half precision), and so does this export before the argmax.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import ModelError
from .case import CaseGeometry
from .folder import NnunetModel
from .preprocess import separate_z

#: Bytes of logits (float64, as nnU-Net's resize) one export slab may hold, input and output together.
SLAB_BYTES = 256 * 2**20


@dataclass(frozen=True)
class AxisMap1D:
    """For each output index along one axis, the two input indices and the weight of the
    second (``weight == 0`` and ``hi == lo`` for nearest or identity)."""

    lo: np.ndarray
    hi: np.ndarray
    weight: np.ndarray

    @classmethod
    def build(cls, n_in: int, n_out: int, order: int) -> AxisMap1D:
        """The map resizing ``n_in`` samples to ``n_out`` (``order`` 0 nearest, 1 linear)."""
        if n_in == n_out:
            idx = np.arange(n_out)
            return cls(idx, idx, np.zeros(n_out))
        x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        x = np.clip(x, 0.0, n_in - 1)
        if order == 0:
            idx = np.clip(np.floor(x + 0.5).astype(np.int64), 0, n_in - 1)
            return cls(idx, idx, np.zeros(n_out))
        lo = np.floor(x).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return cls(lo, hi, x - lo)

    def apply(self, data: np.ndarray, axis: int, offset: int = 0, rows: slice = slice(None)) -> np.ndarray:
        """Output ``rows`` along ``axis`` of ``data`` (whose index 0 is input index ``offset``)."""
        lo, hi, w = self.lo[rows] - offset, self.hi[rows] - offset, self.weight[rows]
        a = np.take(data, lo, axis=axis)
        if not w.any():
            return a
        b = np.take(data, hi, axis=axis)
        shape = [1] * data.ndim
        shape[axis] = len(w)
        wb = w.reshape(shape)
        return np.asarray(a * (1.0 - wb) + b * wb)


def export_orders(model: NnunetModel, geometry: CaseGeometry) -> tuple[int, int, int]:
    """The interpolation order along each axis of the export (nnU-Net's probabilities
    resampling: ``order`` in-plane, ``order_z`` along an anisotropic axis).

    Raises:
        ModelError: an order other than 0 or 1 (not local: geoseg does not stream it).
    """
    rs = model.logits_resampling
    current = list(model.spacing)
    if len(current) < 3:
        current = [geometry.spacing[0], *current]
    axis = separate_z(current, geometry.spacing, rs.force_separate_z)
    orders = tuple(rs.order_z if a == axis else rs.order for a in range(3))
    if any(o not in (0, 1) for o in orders):
        raise ModelError(f"{model.folder}: logits resampling of order {rs.order} (order_z {rs.order_z}) is not "
                         "streamed by geoseg (orders 0 and 1 are)")
    return (orders[0], orders[1], orders[2])


def segment(logits: np.ndarray, model: NnunetModel) -> np.ndarray:
    """Labels from resampled logits ``(heads, ...)`` (float16, as nnU-Net's): argmax (first
    index on ties), or for regions each head's sigmoid above 0.5 in ``regions_class_order``."""
    if model.regions is None:
        return np.asarray(np.argmax(logits, axis=0))
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float32)))
    out = np.zeros(logits.shape[1:], dtype=np.uint16)
    assert model.regions_class_order is not None
    for i, c in enumerate(model.regions_class_order):
        out[probs[i] > 0.5] = c
    return out


def export_slabs(logits: np.ndarray, geometry: CaseGeometry, model: NnunetModel,
                 slab_bytes: int = SLAB_BYTES) -> Iterator[tuple[int, np.ndarray]]:
    """The case's labels, in the transposed (uncropped) grid, slab by slab along its first axis:
    ``(start, labels)`` with ``labels`` of shape ``(rows, *shape_before_cropping[1:])``.

    ``logits``: ``(heads, *preprocessed_shape)``, e.g. a float16 memory map.
    """
    orders = export_orders(model, geometry)
    cropped, pre = geometry.shape_after_cropping, geometry.preprocessed_shape
    if model.logits_resampling.identity and tuple(cropped) != tuple(pre):
        raise ModelError(f"{model.folder}: the plans resample the data but not the logits back "
                         f"(no_resampling_hack): {tuple(pre)} cannot be exported onto {tuple(cropped)}")
    maps = [AxisMap1D.build(pre[a], cropped[a], orders[a]) for a in range(3)]
    full = geometry.shape_before_cropping
    (a0, b0), (a1, b1), (a2, b2) = geometry.bbox
    dtype = np.uint8 if model.num_classes <= 255 else np.uint16
    heads = logits.shape[0]
    per_row = 8 * heads * (pre[1] * pre[2] + cropped[1] * cropped[2]) * 2
    step = max(1, min(full[0], slab_bytes // max(per_row, 1)))
    for start in range(0, full[0], step):
        stop = min(full[0], start + step)
        out = np.zeros((stop - start, full[1], full[2]), dtype=dtype)
        lo, hi = max(start, a0), min(stop, b0)
        if lo < hi:
            rows = slice(lo - a0, hi - a0)
            m0 = maps[0]
            first = int(m0.lo[rows].min())
            last = int(m0.hi[rows].max())
            part = np.asarray(logits[:, first : last + 1], dtype=np.float64)  # as scikit-image
            part = m0.apply(part, 1, first, rows)
            part = maps[1].apply(part, 2)
            part = maps[2].apply(part, 3)
            labels = segment(part.astype(np.float16), model)
            out[lo - start : hi - start, a1:b1, a2:b2] = labels
        yield start, out


def to_disk_order(labels: np.ndarray, model: NnunetModel) -> np.ndarray:
    """A transposed-grid array back in the volume's voxel order (``transpose_backward``, then
    SimpleITK's reversed axes undone)."""
    return np.ascontiguousarray(labels.transpose(model.transpose_backward).transpose(2, 1, 0))


def disk_axis_of_rows(model: NnunetModel) -> int:
    """The volume axis the export's slabs (the transposed grid's first axis) run along."""
    return 2 - model.transpose_forward[0]


__all__ = [
    "SLAB_BYTES",
    "AxisMap1D",
    "disk_axis_of_rows",
    "export_orders",
    "export_slabs",
    "segment",
    "to_disk_order",
]
