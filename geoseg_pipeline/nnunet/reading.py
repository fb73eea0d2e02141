"""A case read as nnU-Net's image readers read it, preprocessed, and kept as a float32 ``.npy``
that the workers' windows are cut from.

nnU-Net's readers (SimpleITK, nibabel) give a volume's voxel axes reversed and its spacing
reversed; ``NibabelIOWithReorient`` first reorients the volume to RAS (as
``nibabel.as_closest_canonical``). A geoseg volume source of any format (NIfTI, Zarr, a DICOM
series) reads as that NIfTI file would.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputDataError
from ..geometry import Window
from ..orientation import AxisMap, axis_map
from .case import CaseGeometry
from .folder import NnunetModel
from .preprocess import preprocess_case


def reader_axes(model: NnunetModel, affine: np.ndarray, shape: Sequence[int]) -> AxisMap:
    """How nnU-Net's reader presents the volume before reversing its axes: as stored, or
    reoriented to RAS (``NibabelIOWithReorient``)."""
    return axis_map(affine, shape, "RAS" if model.reader == "NibabelIOWithReorient" else None)


def write_preprocessed(source: object, model: NnunetModel, path: Path, item: str) -> CaseGeometry:
    """Read ``source`` (a volume source) whole, preprocess it for ``model``, save it at ``path``.

    Raises:
        InputDataError: the volume's channel count differs from ``dataset.json``'s; it holds NaN
            or infinite values (nnU-Net's normalization would make a whole channel NaN).
    """
    grid = source.grid  # type: ignore[attr-defined]
    count = source.channel_count  # type: ignore[attr-defined]
    if count != len(model.channels):
        raise InputDataError(f"{item}: the nnU-Net model takes {len(model.channels)} channel(s) "
                             f"({', '.join(model.channels)} in dataset.json) but the volume has {count}")
    data = source.read(Window((0, 0, 0), tuple(grid.shape)))  # type: ignore[attr-defined]
    if np.issubdtype(data.dtype, np.floating):
        # found here, where the voxels are the source's: nnU-Net's normalization and resampling
        # would spread them over the case before any later check sees them
        finite = np.isfinite(data)
        bad = finite.size - int(np.count_nonzero(finite))
        if bad:
            c, i, j, k = (int(v) for v in np.unravel_index(int(np.argmin(finite)), finite.shape))
            raise InputDataError(f"{item}: {bad} voxel value(s) are NaN or infinite (first: channel {c + 1}, voxel "
                                 f"({i}, {j}, {k}) of the volume as read); nnU-Net models take none: replace them "
                                 "(for example with the background value) before the run")
    amap = reader_axes(model, grid.affine, grid.shape)
    data = amap.to_model_array(data)
    zooms = [float(grid.zooms[p]) for p in amap.perm]
    data = data.transpose(0, 3, 2, 1)  # SimpleITK's axis order
    array, case = preprocess_case(data, zooms[::-1], model)
    np.save(path, array)
    return case


class PreprocessedArray:
    """Windows of a saved preprocessed case ``(C, *shape)``, memory-mapped per read."""

    def __init__(self, path: str) -> None:
        self.path = path

    def read(self, window: Window, channels: Sequence[int] | None = None) -> np.ndarray:
        """``(channels, *window.size)`` float32."""
        data = np.load(self.path, mmap_mode="r")
        part = data[(slice(None), *window.slices())]
        return np.array(part if channels is None else part[list(channels)], dtype=np.float32)

    def close(self) -> None:
        """Nothing is held open."""


__all__ = ["PreprocessedArray", "reader_axes", "write_preprocessed"]
