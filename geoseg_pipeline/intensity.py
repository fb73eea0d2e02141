"""Per-item intensity statistics, computed slab by slab (never the whole volume at once)."""

from __future__ import annotations

import math

import numpy as np

from .errors import InputDataError
from .geometry import Window
from .sources import VolumeSource


def nonzero_mean_std(
    src: VolumeSource, channels: list[int], slab: int = 8
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and standard deviation of each channel's nonzero voxels (MONAI's
    ``NormalizeIntensity(nonzero=True)`` statistics), accumulated in float64 over slabs of the
    last axis.

    Raises:
        InputDataError: a channel has no nonzero voxel, or holds NaN / inf.
    """
    i, j, k = src.grid.shape
    n = np.zeros(len(channels))
    s1 = np.zeros(len(channels))
    s2 = np.zeros(len(channels))
    for k0 in range(0, k, slab):
        data = src.read(Window((0, 0, k0), (i, j, min(slab, k - k0))), channels).astype(np.float64)
        if not np.isfinite(data).all():
            raise InputDataError(f"{src.path}: NaN or infinite voxels (slab from k={k0})")
        for c in range(len(channels)):
            v = data[c][data[c] != 0]
            n[c] += v.size
            s1[c] += v.sum()
            s2[c] += np.square(v).sum()
    if (n == 0).any():
        raise InputDataError(f"{src.path}: no nonzero voxel to compute the z-score from")
    mean = s1 / n
    var = np.maximum(s2 / n - mean**2, 0.0)
    std = tuple(math.sqrt(v) if v > 0 else 1.0 for v in var)  # MONAI divides by 1 when std is 0
    return tuple(float(m) for m in mean), std
