"""Overlap and distance metrics of one class, one item at a time, with MONAI's metric functions.

Each class is compared as a pair of binary masks (``prediction == c`` and ``reference == c``,
both restricted to the elements valid in both files), never as MONAI's one-hot stack of every
class, and only within the bounding box of the two masks together (elements outside it are
background in both, so this changes no value).

* **Dice** and **IoU**: MONAI's ``compute_confusion_matrix_metric("f1 score")`` and
  ``("threat score")``, ``2 tp / (2 tp + fp + fn)`` and ``tp / (tp + fp + fn)``, on the
  confusion matrix that MONAI's ``get_confusion_matrix`` counts :data:`CONFUSION_CHUNK`
  elements at a time. These are the values of ``compute_dice`` and ``compute_iou`` with
  ``ignore_empty=False`` (tested), which we do not call on the whole box because their
  temporaries take about 26 bytes per element (``torch.sum`` of a boolean tensor and
  ``masked_select`` materialise int64 copies): 1 GB for a 40-million-voxel liver box.
* **HD95**: the symmetric 95th-percentile Hausdorff distance as ``monai.metrics.
  compute_hausdorff_distance(..., percentile=95, spacing=...)`` defines it: MONAI's edge
  surface distances (``get_edge_surface_distance``, the function ``compute_hausdorff_distance``
  calls; edges by binary erosion, exact Euclidean distances scaled by the spacing) in both
  directions, the 95th percentile of each (linear interpolation, as ``torch.quantile``) and the
  larger of the two (tested equal to ``compute_hausdorff_distance``). We call the
  surface-distance function directly because ``compute_hausdorff_distance`` first copies both
  masks to float32 (8 more bytes per element) and its ``torch.quantile`` refuses more than
  2**24 surface points per side (a large raster class has more).

**Absent classes.** A class can be missing from the prediction, the reference, or both (after
excluding invalid elements); :attr:`ClassMetrics.presence` says which:

=================== ============ ============ =========================================
presence            Dice / IoU   HD95         why
=================== ============ ============ =========================================
``both``            computed     computed
``reference_only``  0            ``None``     a miss: no overlap; no prediction surface
``prediction_only`` 0            ``None``     a false positive: no reference surface
``neither``         ``None``     ``None``     nothing to segment: undefined, as in nnU-Net
=================== ============ ============ =========================================

MONAI returns Dice = IoU = 1 for ``neither`` with ``ignore_empty=False`` (and NaN for every empty
reference with ``ignore_empty=True``, which would hide false positives), and a NaN distance
when either mask is empty. We report ``None`` (an empty cell) rather than 1 for ``neither`` so
that a class absent from most items does not lift its mean Dice, and leave HD95 undefined
rather than infinite when one side is empty; summaries count each presence per class so that
those cases stay visible.

**Memory.** Per class: two boolean masks of the whole grid (1 byte per element each); within
the masks' bounding box a contiguous copy of each (none when the box is the whole grid), the
confusion matrix's temporaries for one chunk (about 30 MB), and for HD95 MONAI's edge
temporaries (about 10 bytes per element of the box) plus the surface elements' coordinates
and a k-d tree over them (about 50 bytes per surface element). The caller holds the two label
arrays and their validity masks for the whole item (see :mod:`.runner`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics.confusion_matrix import compute_confusion_matrix_metric, get_confusion_matrix
from monai.metrics.utils import get_edge_surface_distance

from ..errors import ignoring_warnings

#: The Hausdorff distance percentile.
HD_PERCENTILE = 95.0
#: Elements per call of MONAI's ``get_confusion_matrix`` (its temporaries are ~30 bytes each).
CONFUSION_CHUNK = 1 << 20

BOTH = "both"
NEITHER = "neither"
REFERENCE_ONLY = "reference_only"
PREDICTION_ONLY = "prediction_only"
PRESENCES = (BOTH, NEITHER, REFERENCE_ONLY, PREDICTION_ONLY)


@dataclass(frozen=True)
class Overlap:
    """Dice, IoU and HD95 of one class in one item (``None`` where undefined, see the module doc)."""

    presence: str
    dice: float | None
    iou: float | None
    hd95: float | None


def presence(pred_count: int, ref_count: int) -> str:
    """Which of the two masks hold the class."""
    if pred_count and ref_count:
        return BOTH
    if ref_count:
        return REFERENCE_ONLY
    return PREDICTION_ONLY if pred_count else NEITHER


def bounding_box(*masks: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every true element of ``masks`` (``None`` when there is none)."""
    ndim = masks[0].ndim
    box = []
    for axis in range(ndim):
        others = tuple(a for a in range(ndim) if a != axis)
        hit = np.zeros(masks[0].shape[axis], dtype=bool)
        for m in masks:
            hit |= np.any(m, axis=others)
        where = np.flatnonzero(hit)
        if where.size == 0:
            return None
        box.append(slice(int(where[0]), int(where[-1]) + 1))
    return tuple(box)


def overlap(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...] | None, *,
            hausdorff: bool = True) -> Overlap:
    """Dice, IoU and (with ``hausdorff``) HD95 of two boolean masks of one grid.

    Args:
        pred: the predicted mask of one class.
        ref: the reference mask of the same class.
        spacing: physical size of one step along each axis (``None``: 1, distances in elements).
        hausdorff: compute HD95 (the costliest part; ``None`` when off).
    """
    if pred.flags.f_contiguous and not pred.flags.c_contiguous:  # NIfTI arrays: work in memory order
        pred, ref = pred.T, ref.T
        spacing = None if spacing is None else spacing[::-1]
    box = bounding_box(pred, ref)
    if box is None:
        return Overlap(NEITHER, None, None, None)
    p, r = np.ascontiguousarray(pred[box]), np.ascontiguousarray(ref[box])
    kind = presence(int(np.count_nonzero(p)), int(np.count_nonzero(r)))
    counts = confusion_matrix(p, r)
    dice = _defined(compute_confusion_matrix_metric("f1 score", counts))
    iou = _defined(compute_confusion_matrix_metric("threat score", counts))
    hd95 = hd95_distance(p, r, spacing) if hausdorff and kind == BOTH else None
    return Overlap(kind, dice, iou, hd95)


def confusion_matrix(pred: np.ndarray, ref: np.ndarray) -> torch.Tensor:
    """MONAI's ``[tp, fp, tn, fn]`` (``get_confusion_matrix``) of two boolean masks of one shape,
    counted :data:`CONFUSION_CHUNK` elements at a time and summed (float64, exact)."""
    total = torch.zeros(4, dtype=torch.float64)
    p, r = pred.reshape(-1), ref.reshape(-1)
    for start in range(0, p.size, CONFUSION_CHUNK):
        yp, y = (torch.from_numpy(np.ascontiguousarray(m[start:start + CONFUSION_CHUNK]).view(np.uint8))[None, None]
                 for m in (p, r))
        total += get_confusion_matrix(yp, y, include_background=True)[0, 0].to(torch.float64)
    return total


def _defined(value: torch.Tensor) -> float | None:
    """A metric's value, ``None`` for NaN or infinity."""
    x = float(value)
    return x if np.isfinite(x) else None


def hd95_distance(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...] | None) -> float:
    """Symmetric 95th-percentile Hausdorff distance of two non-empty boolean masks (see the
    module doc), in the units of ``spacing``."""
    # MONAI 1.5-1.6 passes its own deprecated ``always_return_as_numpy`` argument internally
    with ignoring_warnings((Warning, ".*always_return_as_numpy.*")):
        _, distances, _ = get_edge_surface_distance(
            torch.from_numpy(np.ascontiguousarray(pred)), torch.from_numpy(np.ascontiguousarray(ref)),
            distance_metric="euclidean", spacing=None if spacing is None else [float(s) for s in spacing],
            symmetric=True,
        )
    return max(float(np.percentile(d.numpy().astype(np.float64), HD_PERCENTILE)) for d in distances)
