"""The cohort table of a volume job: one row per item with its class volumes and lesion burden.

Pure: builds rows from :class:`~geoseg_pipeline.report.outcome.ItemOutcome` values; the writers
(:func:`~geoseg_pipeline.report.tables.write_summary` and :mod:`.cohort_page`) put them on disk.

Columns, in order (volumes in mL, lengths in mm, all from the item's ``stats``):

* ``item``, ``source``, ``status``, ``error`` (the reason an item failed; empty when ok),
  ``voxel_volume_mm3``;
* per class, in label order: ``<class>_volume_ml``;
* per lesion class: ``<class>_lesions`` (count), ``<class>_burden_ml`` (total volume of its
  lesions), ``<class>_largest_ml`` (the largest lesion) and ``<class>_max_axial_diameter_mm``
  (the longest axial diameter of any of its lesions, see :mod:`geoseg_pipeline.statistics.lesions`).
  An item without lesions has count 0, burden 0 and no largest lesion or diameter (empty).

DICOM items add their study attributes after ``voxel_volume_mm3``: ``PatientID``,
``StudyInstanceUID``, ``StudyDate``, ``SeriesDescription``, ``Modality`` (the first three not
with ``output.identifiers: false``).

``<class>`` is the class name in lower case with runs of other characters than letters, digits
and ``_`` replaced by ``_`` (``"Tumour core"`` -> ``tumour_core``); a name that repeats an
earlier one gets ``_<label>`` appended. Failed items have only the first four columns filled.

Burden is the sum of the *lesions* (connected components of at least the workflow's
``min_lesion_voxels``), so it can be smaller than the class volume.

Which classes are lesion classes: the job record's ``lesion_classes`` when it has one (the
workflow's ``statistics.lesion_classes``), else every class with a lesion in some item; without
the record a lesion class in which no item has a lesion gets no lesion columns.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..statistics import ItemStats
from .outcome import ItemOutcome

BASE_COLUMNS = ("item", "source", "status", "error", "voxel_volume_mm3")

#: Statuses of items with outputs: done in this run, or in an earlier one (skipped by the ledger).
DONE = ("ok", "skipped")
LESION_SUFFIXES = ("lesions", "burden_ml", "largest_ml", "max_axial_diameter_mm")


@dataclass(frozen=True)
class CohortClass:
    """One class as the cohort table shows it: label, name, column prefix, lesion class or not."""

    index: int
    name: str
    key: str
    lesion_class: bool

    @property
    def columns(self) -> tuple[str, ...]:
        """This class's columns: its volume, then the lesion columns of a lesion class."""
        lesion = tuple(f"{self.key}_{s}" for s in LESION_SUFFIXES) if self.lesion_class else ()
        return (f"{self.key}_volume_ml", *lesion)


@dataclass(frozen=True)
class CohortTable:
    """The cohort table: its classes, column names and rows (``None`` for an empty cell).

    ``lesion_classes_from`` says where the lesion classes came from: ``"workflow"`` (the job
    record) or ``"observed"`` (classes with a lesion in some item).
    """

    classes: tuple[CohortClass, ...]
    columns: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]
    lesion_classes_from: str

    @property
    def lesion_classes(self) -> tuple[CohortClass, ...]:
        """The classes with lesion columns."""
        return tuple(c for c in self.classes if c.lesion_class)


def is_volume_job(outcomes: Iterable[ItemOutcome]) -> bool:
    """Whether some item has volume statistics (a voxel volume): only such jobs get a cohort table."""
    return any(o.stats is not None and o.stats.voxel_volume_mm3 is not None for o in outcomes)


def column_key(name: str) -> str:
    """``name`` as a column prefix: lower case, other runs than letters, digits, ``_`` -> ``_``."""
    return re.sub(r"\W+", "_", name.casefold()).strip("_")


def cohort_classes(
    outcomes: Sequence[ItemOutcome], lesion_classes: Iterable[int] | None = None
) -> tuple[CohortClass, ...]:
    """The classes of the items' statistics in label order (see the module doc for lesion classes)."""
    names: dict[int, str] = {}
    for stats in _stats(outcomes):
        for c in stats.classes:
            names.setdefault(c.index, c.name)
    if lesion_classes is None:
        lesion = {x.class_index for stats in _stats(outcomes) for x in stats.lesions}
    else:
        lesion = {int(k) for k in lesion_classes}
    out: list[CohortClass] = []
    for index in sorted(names):
        key = column_key(names[index]) or f"class_{index}"
        while key in {c.key for c in out}:  # no suffix ends another: distinct keys, distinct columns
            key = f"{key}_{index}"
        out.append(CohortClass(index, names[index], key, index in lesion))
    return tuple(out)


def cohort_table(outcomes: Sequence[ItemOutcome], lesion_classes: Iterable[int] | None = None) -> CohortTable:
    """One row per item, in the order of ``outcomes``; failed items with their reason."""
    classes = cohort_classes(outcomes, lesion_classes)
    # DICOM items' study attributes, in the order they come (none of them for other inputs)
    study = tuple(dict.fromkeys(k for o in outcomes if o.stats is not None for k, _ in o.stats.study))
    columns = (*BASE_COLUMNS, *study, *(col for c in classes for col in c.columns))
    rows = []
    for o in outcomes:
        row: dict[str, Any] = dict.fromkeys(columns)
        row.update(item=o.item, source=o.source, status=o.status, error=o.error or None)
        if o.stats is not None:
            row.update(dict(o.stats.study))
            row.update(_numbers(o.stats, classes))
        rows.append(row)
    return CohortTable(classes, columns, tuple(rows), "observed" if lesion_classes is None else "workflow")


def _stats(outcomes: Iterable[ItemOutcome]) -> list[ItemStats]:
    return [o.stats for o in outcomes if o.stats is not None]


def _numbers(stats: ItemStats, classes: Sequence[CohortClass]) -> dict[str, Any]:
    volumes = {c.index: c.volume_ml for c in stats.classes}
    out: dict[str, Any] = {"voxel_volume_mm3": stats.voxel_volume_mm3}
    for c in classes:
        out[f"{c.key}_volume_ml"] = volumes.get(c.index)
        if c.lesion_class:
            lesions = [x for x in stats.lesions if x.class_index == c.index]
            out[f"{c.key}_lesions"] = len(lesions)
            out[f"{c.key}_burden_ml"] = sum((x.volume_ml for x in lesions), 0.0)
            out[f"{c.key}_largest_ml"] = max((x.volume_ml for x in lesions), default=None)
            out[f"{c.key}_max_axial_diameter_mm"] = max((x.longest_axial_diameter_mm for x in lesions), default=None)
    return out


def lesion_summary(table: CohortTable) -> list[dict[str, Any]]:
    """Per lesion class, over the items that have statistics: how many items, how many of them
    have a lesion, the lesions in all, and the median and largest burden (mL)."""
    out = []
    for c in table.lesion_classes:
        counts = [r[f"{c.key}_lesions"] for r in table.rows if r[f"{c.key}_lesions"] is not None]
        burdens = [r[f"{c.key}_burden_ml"] for r in table.rows if r[f"{c.key}_burden_ml"] is not None]
        out.append({
            "class_index": c.index,
            "class_name": c.name,
            "items": len(counts),
            "items_with_lesions": sum(1 for n in counts if n),
            "lesions": sum(counts),
            "median_burden_ml": statistics.median(burdens) if burdens else None,
            "max_burden_ml": max(burdens, default=None),
        })
    return out


def cohort_document(table: CohortTable, job: dict[str, Any]) -> dict[str, Any]:
    """``cohort.json``: the job record, the classes, the columns, the rows and the lesion summary."""
    return {
        "job": job,
        "items_total": len(table.rows),
        "items_ok": sum(1 for r in table.rows if r["status"] == "ok"),
        "items_skipped": sum(1 for r in table.rows if r["status"] == "skipped"),
        "items_failed": sum(1 for r in table.rows if r["status"] not in DONE),
        "classes": [{"index": c.index, "name": c.name, "column": c.key, "lesion_class": c.lesion_class}
                    for c in table.classes],
        "lesion_classes_from": table.lesion_classes_from,
        "columns": list(table.columns),
        "items": [dict(r) for r in table.rows],
        "lesion_summary": lesion_summary(table),
    }
