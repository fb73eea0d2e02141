"""From stored pixels to model input: validity masks, band order, normalization. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputDataError


@dataclass(frozen=True)
class Preprocessing:
    """What happens to a window between the reader and the model.

    ``bands`` are 1-based; ``mean``/``std`` (optional) normalize each selected band; ``nodata``
    is the stored value that marks invalid pixels (``nan`` allowed).
    """

    bands: tuple[int, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    nodata: float | None = None
    window: tuple[float, float] | None = None
    nonzero_only: bool = False

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std go together")
        if self.mean is not None and len(self.mean) != len(self.bands):
            raise ValueError(f"{len(self.mean)} normalization entries for {len(self.bands)} bands")


def valid_mask(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """Pixels that are not nodata: a pixel is invalid when *every* band holds ``nodata``.

    Args:
        data: ``(bands, rows, cols)`` stored values.
        nodata: the nodata value, ``nan`` or ``None`` (everything valid).
    """
    if nodata is None or not can_hold(data.dtype, nodata):
        # a nodata value the stored type cannot hold marks no pixel (casting would wrap)
        return np.ones(data.shape[1:], dtype=bool)
    if math.isnan(nodata):
        mask: np.ndarray = ~np.isnan(data).all(axis=0)
        return mask
    mask = ~(data == np.asarray(nodata).astype(data.dtype)).all(axis=0)
    return mask


def can_hold(dtype: np.dtype, value: float) -> bool:
    """Whether pixels of ``dtype`` can hold ``value`` (NaN only in floats; integers in range)."""
    if math.isnan(value):
        return bool(np.issubdtype(dtype, np.floating))
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(value).is_integer() and info.min <= value <= info.max
    return True


def to_model_input(data: np.ndarray, valid: np.ndarray, prep: Preprocessing, item: str) -> np.ndarray:
    """Cast to float32 and normalize; non-finite values of nodata pixels become 0 (after
    normalization, like MONAI's padding).

    Raises:
        InputDataError: a valid pixel holds NaN or ±inf (declare ``inputs.nodata: .nan`` to
            treat NaN as nodata).
    """
    x = data.astype(np.float32, copy=True)
    if np.issubdtype(data.dtype, np.floating):
        finite = np.isfinite(x)
        bad = ~finite & valid[None]
        if bad.any():
            first = [int(v[0]) for v in np.nonzero(bad)]
            where = (f"window row {first[1]}, col {first[2]}" if len(first) == 3
                     else f"window voxel {tuple(first[1:])}")
            raise InputDataError(
                f"{item}: {int(bad.sum())} valid pixel value(s) are NaN or infinite "
                f"(first: band {prep.bands[first[0]]}, {where}); set inputs.nodata "
                "(for example .nan) if they mark missing data"
            )
    else:
        finite = None
    if prep.window is not None:
        lo, hi = prep.window
        x = (np.clip(x, lo, hi) - np.float32(lo)) / np.float32(hi - lo)
    if prep.mean is not None and prep.std is not None:
        shape = (-1,) + (1,) * (x.ndim - 1)
        mean = np.asarray(prep.mean, dtype=np.float32).reshape(shape)
        std = np.asarray(prep.std, dtype=np.float32).reshape(shape)
        if prep.nonzero_only:
            x = np.where(x != 0, (x - mean) / std, np.float32(0.0)).astype(np.float32)
        else:
            x = (x - mean) / std
    if finite is not None:
        x[~finite] = 0.0
    return x
