"""What every label-volume sink (NIfTI, Zarr) checks: the label type and each written block."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SinkError
from ..geometry import Window
from .legend import ClassLegend


def label_type(out_dir: Path, legend: ClassLegend, nodata_label: int | None) -> tuple[int, np.dtype]:
    """The largest label value and the smallest unsigned type holding it (uint8 or uint16).

    Raises:
        SinkError: more labels than uint16 holds.
    """
    max_label = max(len(legend.names) - 1, nodata_label or 0)
    if max_label > np.iinfo(np.uint16).max:
        raise SinkError(f"{out_dir}: labels up to {max_label} do not fit in uint16")
    return max_label, np.dtype(np.uint8 if max_label <= np.iinfo(np.uint8).max else np.uint16)


def check_block(out_dir: Path, shape: tuple[int, int, int], window: Window, labels: np.ndarray, max_label: int) -> None:
    """Refuse a block outside the grid, of the wrong shape, or with labels outside ``0..max_label``.

    Raises:
        SinkError: naming the output and the block.
    """
    if window.ndim != 3 or any(a < 0 or e > n for a, e, n in zip(window.start, window.stop, shape, strict=True)):
        raise SinkError(f"{out_dir}: block {window} does not lie inside the voxel grid {shape}")
    if labels.shape != window.size:
        raise SinkError(f"{out_dir}: block {window} got labels of shape {labels.shape}")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) > max_label):
        raise SinkError(
            f"{out_dir}: block {window} has labels {int(labels.min())}..{int(labels.max())}, outside 0..{max_label}"
        )
