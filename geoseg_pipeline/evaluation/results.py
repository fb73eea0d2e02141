"""What an evaluation finds: frozen values per item and class, and their summary per class. Pure.

Undefined numbers are ``None`` (an empty CSV cell, JSON ``null``), never NaN or infinity: see
:mod:`.metrics` for when Dice, IoU and HD95 are undefined. A size difference is prediction minus
reference; a relative difference is that divided by the reference (``None`` when the reference
is empty). Rasters without a CRS have no areas: their relative difference is taken from pixel
counts instead.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .metrics import BOTH, NEITHER, PREDICTION_ONLY, REFERENCE_ONLY
from .pairs import VOLUME

#: Item statuses: evaluated, failed (with its error), or missing one side.
OK, FAILED, NO_REFERENCE, NO_PREDICTION = "ok", "failed", "no_reference", "no_prediction"
#: Units of HD95, in the order summaries list them.
DISTANCE_UNITS = ("mm", "m", "px")


@dataclass(frozen=True)
class ClassMetrics:
    """One class of one item.

    Attributes:
        class_index: the label value.
        class_name: its name.
        presence: ``both``, ``neither``, ``reference_only`` or ``prediction_only``.
        dice, iou, hd95: see :mod:`.metrics` (HD95 in the item's ``hd95_unit``).
        pred_count, ref_count: valid voxels (pixels) of the class.
        pred_size, ref_size: their volume (mL) or area (m²); ``None`` without a CRS.
    """

    class_index: int
    class_name: str
    presence: str
    dice: float | None
    iou: float | None
    hd95: float | None
    pred_count: int
    ref_count: int
    pred_size: float | None
    ref_size: float | None

    @property
    def difference(self) -> float | None:
        """Predicted minus reference size (mL or m²)."""
        if self.pred_size is None or self.ref_size is None:
            return None
        return self.pred_size - self.ref_size

    @property
    def relative_difference(self) -> float | None:
        """:attr:`difference` over the reference size (from counts when sizes are unknown)."""
        if self.pred_size is not None and self.ref_size is not None:
            return (self.pred_size - self.ref_size) / self.ref_size if self.ref_size > 0 else None
        return (self.pred_count - self.ref_count) / self.ref_count if self.ref_count > 0 else None


@dataclass(frozen=True)
class ItemEvaluation:
    """One item: its files, status, units and per-class metrics (empty unless ``status == "ok"``).

    Attributes:
        item: the item name.
        status: ``ok``, ``failed``, ``no_reference`` or ``no_prediction``.
        kind: ``raster`` or ``volume``.
        prediction, reference: the label files (``None`` when missing).
        error: why the item was not evaluated (``None`` when ok).
        hd95_unit: ``mm``, ``m`` or ``px`` (``None`` unless evaluated).
        size_unit: ``mL``, ``m2`` or ``None`` (no CRS, or not evaluated).
        classes: per class, in label order.
        seconds: time spent on the item.
    """

    item: str
    status: str
    kind: str
    prediction: Path | None
    reference: Path | None
    error: str | None = None
    hd95_unit: str | None = None
    size_unit: str | None = None
    classes: tuple[ClassMetrics, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True)
class MetricSummary:
    """One metric of one class over the items where it is defined."""

    metric: str
    mean: float | None
    median: float | None
    std: float | None
    n: int


@dataclass(frozen=True)
class ClassSummary:
    """One class over the evaluated items: how often it is present where, and its metrics.

    ``std`` is the sample standard deviation (``None`` below two values).
    """

    class_index: int
    class_name: str
    items: int
    both: int
    neither: int
    reference_only: int
    prediction_only: int
    metrics: tuple[MetricSummary, ...]

    def metric(self, name: str) -> MetricSummary:
        """The summary of metric ``name`` (``KeyError`` when the run has none such)."""
        for m in self.metrics:
            if m.metric == name:
                return m
        raise KeyError(name)


def size_prefix(kind: str) -> str:
    """``volume`` or ``area``: the column prefix of an item kind's sizes."""
    return "volume" if kind == VOLUME else "area"


def size_suffix(kind: str) -> str:
    """``ml`` or ``m2``: the unit suffix of an item kind's size columns."""
    return "ml" if kind == VOLUME else "m2"


def metric_values(item: ItemEvaluation, c: ClassMetrics) -> dict[str, float | None]:
    """The summarised metrics of one row, by summary name (``hd95_<unit>``,
    ``<volume|area>_difference_<ml|m2>``, ``<volume|area>_relative_difference``)."""
    prefix = size_prefix(item.kind)
    return {
        "dice": c.dice,
        "iou": c.iou,
        f"hd95_{item.hd95_unit}": c.hd95,
        f"{prefix}_difference_{size_suffix(item.kind)}": c.difference,
        f"{prefix}_relative_difference": c.relative_difference,
    }


def metric_names(items: Sequence[ItemEvaluation]) -> tuple[str, ...]:
    """The summary's metrics for ``items``' kinds and units, in a fixed order."""
    ok = [i for i in items if i.status == OK]
    names = ["dice", "iou"]
    names += [f"hd95_{u}" for u in DISTANCE_UNITS if any(i.hd95_unit == u for i in ok)]
    for kind in sorted({i.kind for i in items}, key=lambda k: k != VOLUME):
        prefix = size_prefix(kind)
        names += [f"{prefix}_difference_{size_suffix(kind)}", f"{prefix}_relative_difference"]
    return tuple(names)


def summarize_metric(name: str, values: Iterable[float | None]) -> MetricSummary:
    """Mean, median and sample standard deviation of the defined ``values``."""
    xs = [v for v in values if v is not None]
    return MetricSummary(
        name,
        statistics.fmean(xs) if xs else None,
        statistics.median(xs) if xs else None,
        statistics.stdev(xs) if len(xs) > 1 else None,
        len(xs),
    )


def summarize(items: Sequence[ItemEvaluation], classes: Sequence[int],
              names: Mapping[int, str]) -> tuple[ClassSummary, ...]:
    """One :class:`ClassSummary` per class, over the evaluated items."""
    metrics = metric_names(items)
    out = []
    for k in classes:
        rows = [(i, c) for i in items if i.status == OK for c in i.classes if c.class_index == k]
        values = [metric_values(i, c) for i, c in rows]
        count = {p: sum(1 for _, c in rows if c.presence == p) for p in (BOTH, NEITHER, REFERENCE_ONLY,
                                                                         PREDICTION_ONLY)}
        out.append(ClassSummary(
            k, names[k], len(rows), count[BOTH], count[NEITHER], count[REFERENCE_ONLY], count[PREDICTION_ONLY],
            tuple(summarize_metric(m, (v.get(m) for v in values)) for m in metrics),
        ))
    return tuple(out)


@dataclass(frozen=True)
class EvaluationResult:
    """What :func:`~geoseg_pipeline.evaluation.evaluate` found and wrote.

    Attributes:
        prediction_dir, reference_dir: the folders compared.
        classes: the classes evaluated, in label order.
        items: every item found on either side, in name order.
        summary: per class, in label order.
        outputs: the files written (``evaluation.csv``, ``evaluation_summary.csv``,
            ``evaluation_summary.json``).
    """

    prediction_dir: Path
    reference_dir: Path
    classes: tuple[int, ...]
    items: tuple[ItemEvaluation, ...]
    summary: tuple[ClassSummary, ...]
    outputs: tuple[Path, ...]

    @property
    def evaluated(self) -> tuple[ItemEvaluation, ...]:
        """The items with metrics."""
        return tuple(i for i in self.items if i.status == OK)

    @property
    def not_evaluated(self) -> tuple[ItemEvaluation, ...]:
        """The items without metrics (failed, or missing their prediction or reference)."""
        return tuple(i for i in self.items if i.status != OK)

    def item(self, name: str) -> ItemEvaluation:
        """The item called ``name`` (``KeyError`` when there is none)."""
        for i in self.items:
            if i.item == name:
                return i
        raise KeyError(name)
