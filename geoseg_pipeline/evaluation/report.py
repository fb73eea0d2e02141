"""``evaluation.csv``, ``evaluation_summary.csv`` and ``evaluation_summary.json``, each written
atomically (a temporary file renamed into place).

``evaluation.csv``: one row per evaluated item and class, one row per item not evaluated (its
``status`` and ``error``, class columns empty). Columns: ``item, class_index, class_name,
presence, dice, iou, hd95, hd95_unit``, then for volumes ``pred_voxels, ref_voxels,
pred_volume_ml, ref_volume_ml, volume_difference_ml, volume_relative_difference`` and for rasters
``pred_pixels, ref_pixels, pred_area_m2, ref_area_m2, area_difference_m2,
area_relative_difference`` (only the kinds present), then ``status, error, prediction,
reference``.

``evaluation_summary.csv``: one row per class: ``class_index, class_name, items, both, neither,
reference_only, prediction_only``, then ``<metric>_mean, _median, _std, _n`` for each metric of
:func:`~.results.metric_names`. ``evaluation_summary.json``: the folders, item counts, the
conventions, the per-class summary and every item's status and files.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import SinkError
from ..storage import atomic_write_text
from .metrics import HD_PERCENTILE
from .pairs import RASTER, VOLUME
from .results import (
    FAILED,
    NO_PREDICTION,
    NO_REFERENCE,
    OK,
    ClassMetrics,
    EvaluationResult,
    ItemEvaluation,
    metric_names,
    size_prefix,
    size_suffix,
)

CSV_NAME = "evaluation.csv"
SUMMARY_CSV_NAME = "evaluation_summary.csv"
SUMMARY_JSON_NAME = "evaluation_summary.json"

_HEAD = ("item", "class_index", "class_name", "presence", "dice", "iou", "hd95", "hd95_unit")
_TAIL = ("status", "error", "prediction", "reference")
_COUNTS = {VOLUME: "voxels", RASTER: "pixels"}
_STATS = ("mean", "median", "std", "n")

CONVENTIONS = {
    "hd95": f"symmetric {HD_PERCENTILE:g}th-percentile Hausdorff distance between the class surfaces (MONAI)",
    "neither": "class in neither file: dice, iou, hd95 empty (undefined), not averaged",
    "reference_only": "class missed: dice 0, iou 0, hd95 empty",
    "prediction_only": "false positive: dice 0, iou 0, hd95 empty",
    "difference": "prediction minus reference; relative difference divides by the reference",
    "std": "sample standard deviation",
    "nodata": "elements that are nodata in either file are excluded from every metric",
}


def _size_columns(kind: str) -> tuple[str, ...]:
    prefix, suffix, count = size_prefix(kind), size_suffix(kind), _COUNTS[kind]
    return (f"pred_{count}", f"ref_{count}", f"pred_{prefix}_{suffix}", f"ref_{prefix}_{suffix}",
            f"{prefix}_difference_{suffix}", f"{prefix}_relative_difference")


def _kinds(items: Sequence[ItemEvaluation]) -> list[str]:
    return [k for k in (VOLUME, RASTER) if any(i.kind == k for i in items)]


def item_columns(items: Sequence[ItemEvaluation]) -> tuple[str, ...]:
    """The columns of ``evaluation.csv`` for ``items``."""
    return (*_HEAD, *(c for k in _kinds(items) for c in _size_columns(k)), *_TAIL)


def _class_row(item: ItemEvaluation, c: ClassMetrics) -> dict[str, Any]:
    sizes = dict(zip(_size_columns(item.kind), (c.pred_count, c.ref_count, c.pred_size, c.ref_size, c.difference,
                                                c.relative_difference), strict=True))
    return {"class_index": c.class_index, "class_name": c.class_name, "presence": c.presence, "dice": c.dice,
            "iou": c.iou, "hd95": c.hd95, "hd95_unit": item.hd95_unit, **sizes}


def item_rows(items: Sequence[ItemEvaluation]) -> list[dict[str, Any]]:
    """The rows of ``evaluation.csv``."""
    rows = []
    for i in items:
        base = {"item": i.item, "status": i.status, "error": i.error, "prediction": i.prediction,
                "reference": i.reference}
        if i.status == OK:
            rows += [{**base, **_class_row(i, c)} for c in i.classes]
        else:
            rows.append(base)
    return rows


def summary_rows(result: EvaluationResult) -> tuple[tuple[str, ...], list[dict[str, Any]]]:
    """The columns and rows of ``evaluation_summary.csv``."""
    metrics = metric_names(result.items)
    columns = ("class_index", "class_name", "items", "both", "neither", "reference_only", "prediction_only",
               *(f"{m}_{s}" for m in metrics for s in _STATS))
    rows = []
    for s in result.summary:
        row: dict[str, Any] = {"class_index": s.class_index, "class_name": s.class_name, "items": s.items,
                               "both": s.both, "neither": s.neither, "reference_only": s.reference_only,
                               "prediction_only": s.prediction_only}
        for m in s.metrics:
            row.update({f"{m.metric}_mean": m.mean, f"{m.metric}_median": m.median, f"{m.metric}_std": m.std,
                        f"{m.metric}_n": m.n})
        rows.append(row)
    return columns, rows


def summary_document(result: EvaluationResult) -> dict[str, Any]:
    """``evaluation_summary.json``."""
    statuses = [i.status for i in result.items]
    return {
        "prediction_dir": str(result.prediction_dir),
        "reference_dir": str(result.reference_dir),
        "items_total": len(result.items),
        **{f"items_{s}": statuses.count(s) for s in (OK, FAILED, NO_REFERENCE, NO_PREDICTION)},
        "conventions": CONVENTIONS,
        "classes": [
            {"class_index": s.class_index, "class_name": s.class_name, "items": s.items, "both": s.both,
             "neither": s.neither, "reference_only": s.reference_only, "prediction_only": s.prediction_only,
             "metrics": {m.metric: {"mean": m.mean, "median": m.median, "std": m.std, "n": m.n} for m in s.metrics}}
            for s in result.summary
        ],
        "items": [
            {"item": i.item, "status": i.status, "kind": i.kind, "error": i.error, "hd95_unit": i.hd95_unit,
             "size_unit": i.size_unit, "prediction": _text(i.prediction), "reference": _text(i.reference),
             "seconds": round(i.seconds, 3)}
            for i in result.items
        ],
    }


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return buf.getvalue()


def evaluation_paths(out: Path) -> tuple[Path, Path, Path]:
    """Where the three files go in ``out``: the table, the summary table, the summary document."""
    return out / CSV_NAME, out / SUMMARY_CSV_NAME, out / SUMMARY_JSON_NAME


def write_evaluation(out: Path, result: EvaluationResult) -> tuple[Path, Path, Path]:
    """Write the three files of :func:`evaluation_paths` into ``out`` (created if needed).

    Raises:
        SinkError: a file cannot be written.
    """
    paths = evaluation_paths(out)
    columns, rows = summary_rows(result)
    texts = (
        _csv(item_rows(result.items), item_columns(result.items)),
        _csv(rows, columns),
        json.dumps(summary_document(result), indent=2, allow_nan=False) + "\n",
    )
    for path, text in zip(paths, texts, strict=True):
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            raise SinkError(f"{path}: cannot write the evaluation: {exc}") from exc
    return paths
