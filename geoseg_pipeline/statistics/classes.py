"""Tally label blocks into per-class pixel counts and areas."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..geometry import Window
from .area import PixelAreas
from .lesions import Lesion


@dataclass(frozen=True)
class ClassStats:
    """One class of one item. Areas are ``None`` where the item has no usable CRS."""

    index: int
    name: str
    pixels: int
    area_m2: float | None
    share: float
    volume_ml: float | None = None

    @property
    def area_ha(self) -> float | None:
        """Area in hectares."""
        return None if self.area_m2 is None else self.area_m2 / 10_000.0


@dataclass(frozen=True)
class ItemStats:
    """Per-class statistics of one item. ``share`` is of the valid area (or valid pixels);
    volumes also carry their voxel volume and lesions."""

    item: str
    classes: tuple[ClassStats, ...]
    valid_pixels: int
    nodata_pixels: int
    valid_area_m2: float | None
    area_method: str
    area_note: str
    voxel_volume_mm3: float | None = None
    lesions: tuple[Lesion, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (the run ledger keeps one per finished item)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ItemStats:
        """The inverse of :meth:`to_dict`."""
        def point(v: Sequence[int]) -> tuple[int, int, int]:
            return (int(v[0]), int(v[1]), int(v[2]))

        classes = tuple(ClassStats(**c) for c in doc["classes"])
        lesions = tuple(
            Lesion(**{**x, "centroid_mm": tuple(x["centroid_mm"]), "bbox_min": point(x["bbox_min"]),
                      "bbox_max": point(x["bbox_max"])})
            for x in doc.get("lesions", ())
        )
        return cls(**{**doc, "classes": classes, "lesions": lesions})


class ClassTally:
    """Running per-class sums over blocks of one item."""

    def __init__(self, num_classes: int, areas: PixelAreas) -> None:
        self.num_classes = num_classes
        self.areas = areas
        self.pixels = np.zeros(num_classes, dtype=np.int64)
        self.area_m2 = np.zeros(num_classes, dtype=np.float64)
        self.nodata_pixels = 0

    def add(self, window: Window, labels: np.ndarray, valid: np.ndarray) -> None:
        """Count the valid pixels of one block (``window`` places it on the item's grid)."""
        self.nodata_pixels += int(valid.size - np.count_nonzero(valid))
        rows = np.broadcast_to(np.arange(labels.shape[0])[:, None], labels.shape)[valid]
        codes = labels[valid].astype(np.int64)
        per_row = np.bincount(rows * self.num_classes + codes, minlength=labels.shape[0] * self.num_classes)
        per_row = per_row.reshape(labels.shape[0], self.num_classes)
        self.pixels += per_row.sum(axis=0)
        if self.areas.row_area_m2 is not None:
            r0 = window.start[0]
            self.area_m2 += self.areas.row_area_m2[r0 : r0 + labels.shape[0]] @ per_row

    def result(self, item: str, names: Sequence[str]) -> ItemStats:
        """Freeze the tally into :class:`ItemStats`."""
        valid = int(self.pixels.sum())
        has_area = self.areas.available
        total_area = float(self.area_m2.sum()) if has_area else None
        classes = []
        for k in range(self.num_classes):
            area = float(self.area_m2[k]) if has_area else None
            if has_area and total_area:
                share = float(self.area_m2[k]) / total_area
            else:
                share = float(self.pixels[k]) / valid if valid else 0.0
            classes.append(ClassStats(k, names[k], int(self.pixels[k]), area, share))
        return ItemStats(item, tuple(classes), valid, self.nodata_pixels, total_area,
                         self.areas.method, self.areas.note)


class VolumeTally:
    """Running per-class voxel counts of one volume; volumes in mL from the voxel volume."""

    def __init__(self, num_classes: int, voxel_volume_mm3: float) -> None:
        self.num_classes = num_classes
        self.voxel_volume_mm3 = voxel_volume_mm3
        self.voxels = np.zeros(num_classes, dtype=np.int64)

    def add(self, labels: np.ndarray) -> None:
        """Count one block's labels."""
        self.voxels += np.bincount(labels.ravel(), minlength=self.num_classes)[: self.num_classes]

    def result(self, item: str, names: Sequence[str], lesions: Sequence[Lesion] = ()) -> ItemStats:
        """Freeze the tally (and the item's lesions) into :class:`ItemStats`."""
        total = int(self.voxels.sum())
        ml = self.voxel_volume_mm3 / 1000.0
        classes = tuple(
            ClassStats(k, names[k], int(v), None, float(v) / total if total else 0.0, volume_ml=float(v) * ml)
            for k, v in enumerate(self.voxels)
        )
        note = f"voxel volume {self.voxel_volume_mm3:.6g} mm³ = |det(affine)|"
        return ItemStats(item, classes, total, 0, None, "voxel", note, self.voxel_volume_mm3, tuple(lesions))
