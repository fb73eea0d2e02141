"""Where an nnU-Net case's preprocessed array lies in the case (nnU-Net's ``properties``). Pure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CaseGeometry:
    """Where the preprocessed array lies in the case (nnU-Net's ``properties``): the transposed
    shape before cropping, the crop box (half-open, per axis), the cropped shape, the
    preprocessed (resampled) shape, and the transposed original spacing."""

    shape_before_cropping: tuple[int, int, int]
    bbox: tuple[tuple[int, int], ...]
    shape_after_cropping: tuple[int, int, int]
    preprocessed_shape: tuple[int, int, int]
    spacing: tuple[float, float, float]


__all__ = ["CaseGeometry"]
