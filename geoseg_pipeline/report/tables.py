"""``stats.json`` / ``stats.csv`` per item, ``summary.csv`` / ``summary.json`` per job, and for
volume jobs the cohort tables ``cohort.csv`` / ``cohort.json`` and page ``report.html``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..statistics import ItemStats
from ..storage import atomic_write_text
from .cohort import cohort_document, cohort_table, is_volume_job
from .cohort_page import write_cohort_page
from .outcome import ItemOutcome

_CLASS_COLUMNS = ["class_index", "class_name", "pixels", "area_m2", "area_ha", "volume_ml", "share"]
_LESION_COLUMNS = ["lesion_id", "class_index", "class_name", "voxels", "volume_ml", "centroid_x_mm", "centroid_y_mm",
                   "centroid_z_mm", "bbox_min", "bbox_max", "longest_axial_diameter_mm"]


def _class_rows(stats: ItemStats) -> list[dict[str, Any]]:
    return [
        {
            "class_index": c.index,
            "class_name": c.name,
            "pixels": c.pixels,
            "area_m2": c.area_m2,
            "area_ha": c.area_ha,
            "volume_ml": c.volume_ml,
            "share": c.share,
        }
        for c in stats.classes
    ]


def _lesion_rows(stats: ItemStats) -> list[dict[str, Any]]:
    names = {c.index: c.name for c in stats.classes}
    return [
        {
            "lesion_id": x.id, "class_index": x.class_index, "class_name": names.get(x.class_index, ""),
            "voxels": x.voxels, "volume_ml": x.volume_ml,
            "centroid_x_mm": x.centroid_mm[0], "centroid_y_mm": x.centroid_mm[1], "centroid_z_mm": x.centroid_mm[2],
            "bbox_min": " ".join(map(str, x.bbox_min)), "bbox_max": " ".join(map(str, x.bbox_max)),
            "longest_axial_diameter_mm": x.longest_axial_diameter_mm,
        }
        for x in stats.lesions
    ]


def write_lesions(out_dir: Path, stats: ItemStats) -> Path:
    """``lesions.csv``: one row per lesion (world coordinates in the input's scanner space, mm)."""
    path = out_dir / "lesions.csv"
    atomic_write_text(path, _csv(_lesion_rows(stats), _LESION_COLUMNS))
    return path


def _csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buf.getvalue()


def write_item_stats(out_dir: Path, source: str, stats: ItemStats, meta: dict[str, Any]) -> list[Path]:
    """Write ``stats.json`` and ``stats.csv`` for one item; returns their paths."""
    doc = {
        "item": stats.item,
        "source": source,
        "valid_pixels": stats.valid_pixels,
        "nodata_pixels": stats.nodata_pixels,
        "valid_area_m2": stats.valid_area_m2,
        "valid_area_ha": None if stats.valid_area_m2 is None else stats.valid_area_m2 / 10_000.0,
        "area_method": stats.area_method,
        "area_note": stats.area_note,
        "share_of": "valid area" if stats.valid_area_m2 else "valid pixels",
        **meta,
        **({"study": dict(stats.study)} if stats.study else {}),
        "classes": _class_rows(stats),
    }
    if stats.voxel_volume_mm3 is not None:
        doc["voxel_volume_mm3"] = stats.voxel_volume_mm3
        doc["lesions"] = _lesion_rows(stats)
        doc["lesion_count"] = len(stats.lesions)
        doc["lesion_burden_ml"] = sum(x.volume_ml for x in stats.lesions)
    json_path, csv_path = out_dir / "stats.json", out_dir / "stats.csv"
    atomic_write_text(json_path, json.dumps(doc, indent=2) + "\n")
    atomic_write_text(csv_path, _csv(_class_rows(stats), _CLASS_COLUMNS))
    return [json_path, csv_path]


def write_summary(out_root: Path, outcomes: Sequence[ItemOutcome], job: dict[str, Any]) -> list[Path]:
    """``summary.csv`` (one row per item and class; one row per failed item) and
    ``summary.json`` (the job record); for a volume job (an item with a voxel volume) also
    :func:`write_cohort`'s files. Returns the paths written, the summary's first."""
    columns = ["item", "status", *_CLASS_COLUMNS, "source", "error"]
    rows: list[dict[str, Any]] = []
    for o in outcomes:
        if o.stats is not None:
            rows += [{"item": o.item, "status": o.status, "source": o.source, **r} for r in _class_rows(o.stats)]
        else:
            rows.append({"item": o.item, "status": o.status, "source": o.source, "error": o.error})
    doc = {
        **job,
        "items": [
            {"item": o.item, "source": o.source, "status": o.status, "error": o.error or None,
             "seconds": round(o.seconds, 3), "windows": o.windows, "outputs": list(o.outputs), **o.extra}
            for o in outcomes
        ],
    }
    csv_path, json_path = out_root / "summary.csv", out_root / "summary.json"
    atomic_write_text(csv_path, _csv(rows, columns))
    atomic_write_text(json_path, json.dumps(doc, indent=2) + "\n")
    paths = [csv_path, json_path]
    if job.get("kind") == "volume" or is_volume_job(outcomes):
        paths += write_cohort(out_root, outcomes, job)
    return paths


def write_cohort(out_root: Path, outcomes: Sequence[ItemOutcome], job: dict[str, Any]) -> list[Path]:
    """The cohort of a volume job (see :mod:`.cohort`): ``cohort.csv`` (one row per item),
    ``cohort.json`` (the same rows with the job record, classes and lesion summary) and the
    page ``report.html``. The lesion classes are ``job["lesion_classes"]`` when the record has
    them, else the classes with a lesion in some item. Returns the three paths."""
    lesion_classes = job.get("lesion_classes")
    table = cohort_table(outcomes, None if lesion_classes is None else [int(k) for k in lesion_classes])
    csv_path, json_path = out_root / "cohort.csv", out_root / "cohort.json"
    atomic_write_text(csv_path, _csv(table.rows, table.columns))
    atomic_write_text(json_path, json.dumps(cohort_document(table, job), indent=2) + "\n")
    return [csv_path, json_path, write_cohort_page(out_root, table, outcomes, job)]
