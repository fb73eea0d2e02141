"""Tally label blocks into per-class pixel counts and areas."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..geometry import Window
from ..stitching.consumer import LabelBlock
from .area import PixelAreas
from .lesions import Lesion
from .zones import ZoneStats

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_T = TypeVar("_T", bound="DataclassInstance")


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

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ClassStats:
        """The inverse of :func:`dataclasses.asdict`, for records of any version: unknown fields
        are ignored, missing optional ones take their defaults.

        Raises:
            ValueError: ``doc`` is not one class's statistics (a required field is missing).
        """
        return _build(cls, doc)


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
    #: a DICOM item's study attributes, ``(name, value)`` pairs (``VolumeItem``'s ``study_fields``)
    study: tuple[tuple[str, str], ...] = ()
    #: class areas per zone (``statistics.zones``)
    zones: tuple[ZoneStats, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (the run ledger keeps one per finished item)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ItemStats:
        """The inverse of :meth:`to_dict`, also for records written by other versions (the run
        ledger keeps them across upgrades): unknown fields are ignored at every level, missing
        optional ones (a newer field, such as ``lesions``) take their defaults.

        Raises:
            ValueError: ``doc`` is not an item's statistics (not a mapping, a required field
                missing or of the wrong shape).
        """
        if not isinstance(doc, Mapping) or not isinstance(doc.get("classes"), list):
            raise ValueError(f"not an item's statistics (no list of classes): {str(doc)[:80]}")
        try:
            classes = tuple(ClassStats.from_dict(c) for c in doc["classes"])
            lesions = tuple(_lesion(x) for x in doc.get("lesions") or ())
        except (TypeError, ValueError) as exc:  # TypeError: "lesions" is not a list
            raise ValueError(f"not an item's statistics: {exc}") from exc
        try:
            study = tuple((str(k), str(v)) for k, v in doc.get("study") or ())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not an item's statistics: study {exc}") from exc
        try:
            zones = tuple(_build(ZoneStats, z) for z in doc.get("zones") or ())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not an item's statistics: zones {exc}") from exc
        return _build(cls, {**doc, "classes": classes, "lesions": lesions, "study": study, "zones": zones})


def _build(cls: type[_T], doc: Mapping[str, Any]) -> _T:
    """``cls(**doc)`` with only the fields ``cls`` has."""
    if not isinstance(doc, Mapping):
        raise ValueError(f"{cls.__name__}: expected a mapping, got {str(doc)[:80]}")
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in doc.items() if k in names})
    except TypeError as exc:  # a required field is missing
        raise ValueError(f"{cls.__name__}: {exc}") from exc


def _lesion(doc: Mapping[str, Any]) -> Lesion:
    """A :class:`Lesion` from its record (JSON brings its points back as lists)."""
    lesion = _build(Lesion, doc)
    try:
        c, lo, hi = lesion.centroid_mm, lesion.bbox_min, lesion.bbox_max
        return dataclasses.replace(lesion, centroid_mm=(float(c[0]), float(c[1]), float(c[2])),
                                   bbox_min=(int(lo[0]), int(lo[1]), int(lo[2])),
                                   bbox_max=(int(hi[0]), int(hi[1]), int(hi[2])))
    except (TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"Lesion: a point is not 3 numbers: {exc}") from exc


def row_class_counts(labels: np.ndarray, valid: np.ndarray, num_classes: int) -> np.ndarray:
    """Valid pixels per (row, class) of a 2D block, ``(rows, num_classes)`` int64: what
    :class:`ClassTally` adds up (a worker computes it beside the block it finished)."""
    # one bincount over (row, class) codes; invalid pixels go to a spare last column, so that
    # no masked copy of the block is made
    bins = num_classes + 1
    codes = labels.astype(np.int32)
    if not valid.all():
        codes[~valid] = num_classes
    codes += (np.arange(labels.shape[0], dtype=np.int32) * bins)[:, None]
    per_row = np.bincount(codes.ravel(), minlength=labels.shape[0] * bins).reshape(labels.shape[0], bins)
    return per_row[:, :num_classes]


class ClassTally:
    """Running per-class sums over blocks of one raster item (a block consumer: its result is
    the item's :class:`ItemStats`, the ``names`` of its classes and its name ``item``)."""

    def __init__(self, num_classes: int, areas: PixelAreas, names: Sequence[str] = (), item: str = "") -> None:
        self.num_classes = num_classes
        self.areas = areas
        self.names = tuple(names) or tuple(f"class_{k}" for k in range(num_classes))
        self.item = item
        self.pixels = np.zeros(num_classes, dtype=np.int64)
        # valid pixels per (row, class): areas are summed once, in result(), so that they do not
        # depend on the order or the shape of the blocks (float sums would round differently)
        rows = 0 if areas.row_area_m2 is None else len(areas.row_area_m2)
        self.row_pixels = np.zeros((rows, num_classes), dtype=np.int64)
        self.nodata_pixels = 0

    def add(self, block: LabelBlock) -> None:
        """Count the valid pixels of one block (the worker's counts, when it sent them)."""
        if block.row_counts is not None:
            self._add_rows(block.window, block.row_counts)
            return
        valid = block.valid if block.valid is not None else np.ones(block.labels.shape, bool)
        self.count(block.window, block.labels, valid)

    def finish(self) -> ItemStats:
        """The item's statistics."""
        return self.result(self.item, self.names)

    def count(self, window: Window, labels: np.ndarray, valid: np.ndarray) -> None:
        """Count the valid pixels of one block (``window`` places it on the item's grid)."""
        self._add_rows(window, row_class_counts(labels, valid, self.num_classes))

    def _add_rows(self, window: Window, per_row: np.ndarray) -> None:
        rows, width = window.size
        if per_row.shape != (rows, self.num_classes):
            raise ValueError(f"{self.item}: counts of shape {per_row.shape} for block {window}")
        per_row = per_row.astype(np.int64, copy=False)  # a worker sends uint16
        self.nodata_pixels += rows * width - int(per_row.sum())
        self.pixels += per_row.sum(axis=0)
        if self.areas.row_area_m2 is not None:
            r0 = window.start[0]
            self.row_pixels[r0 : r0 + rows] += per_row

    def result(self, item: str, names: Sequence[str]) -> ItemStats:
        """Freeze the tally into :class:`ItemStats`."""
        valid = int(self.pixels.sum())
        area_m2 = self.areas.row_area_m2 @ self.row_pixels if self.areas.row_area_m2 is not None else None
        total_area = float(area_m2.sum()) if area_m2 is not None else None
        classes = []
        for k in range(self.num_classes):
            area = float(area_m2[k]) if area_m2 is not None else None
            if area is not None and total_area:
                share = area / total_area
            else:
                share = float(self.pixels[k]) / valid if valid else 0.0
            classes.append(ClassStats(k, names[k], int(self.pixels[k]), area, share))
        return ItemStats(item, tuple(classes), valid, self.nodata_pixels, total_area,
                         self.areas.method, self.areas.note)


class VolumeTally:
    """Running per-class voxel counts of one volume; volumes in mL from the voxel volume (a
    block consumer: its result is the item's :class:`ItemStats` without lesions)."""

    def __init__(self, num_classes: int, voxel_volume_mm3: float, names: Sequence[str] = (), item: str = "") -> None:
        self.num_classes = num_classes
        self.voxel_volume_mm3 = voxel_volume_mm3
        self.voxels = np.zeros(num_classes, dtype=np.int64)
        self.names = tuple(names) or tuple(f"class_{k}" for k in range(num_classes))
        self.item = item

    def finish(self) -> ItemStats:
        """The item's statistics (lesions are :class:`~.lesions.LesionTracker`'s)."""
        return self.result(self.item, self.names)

    def add(self, block: LabelBlock) -> None:
        """Count one block's labels."""
        labels = block.labels
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
