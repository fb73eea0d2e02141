"""``stats.json`` / ``stats.csv`` per item, ``summary.csv`` / ``summary.json`` per job, and for
volume jobs the cohort tables ``cohort.csv`` / ``cohort.json`` and page ``report.html``."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..statistics import ItemStats
from ..storage import atomic_write_text
from .cohort import cohort_document, cohort_table, is_volume_job
from .cohort_page import write_cohort_page
from .landcover import write_job_report
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


_ZONE_COLUMNS = ["zone", "class_index", "class_name", "pixels", "area_m2", "area_ha", "share", "own_pixels",
                 "own_area_m2"]
_ZONE_SUMMARY_COLUMNS = ["zone", "class_index", "class_name", "pixels", "area_m2", "area_ha", "share", "items"]


def _zone_rows(stats: ItemStats) -> list[dict[str, Any]]:
    return [{**dataclasses.asdict(z), "area_ha": z.area_ha} for z in stats.zones]


def zone_summary_rows(outcomes: Sequence[ItemOutcome]) -> list[dict[str, Any]]:
    """Per zone and class over the items of a job: the pixels and areas that no earlier item
    covers (``own_*``), added up, so that ground two scenes cover counts once; ``share`` of the
    zone's valid area (pixels without areas); ``items``: how many items contributed."""
    sums: dict[tuple[str, int], dict[str, Any]] = {}
    for o in outcomes:
        if o.stats is None:
            continue
        for z in o.stats.zones:
            row = sums.setdefault((z.zone, z.class_index), {"zone": z.zone, "class_index": z.class_index,
                                                           "class_name": z.class_name, "pixels": 0,
                                                           "area_m2": None, "items": 0})
            row["pixels"] += z.own_pixels
            if z.own_area_m2 is not None:
                row["area_m2"] = (row["area_m2"] or 0.0) + z.own_area_m2
            row["items"] += 1 if z.own_pixels else 0
    totals: dict[str, tuple[int, float]] = {}
    for (zone, _), row in sums.items():
        pixels, area = totals.get(zone, (0, 0.0))
        totals[zone] = (pixels + row["pixels"], area + (row["area_m2"] or 0.0))
    rows = []
    for key in sorted(sums):
        row = sums[key]
        pixels, area = totals[row["zone"]]
        row["area_ha"] = None if row["area_m2"] is None else row["area_m2"] / 10_000.0
        row["share"] = (row["area_m2"] / area if row["area_m2"] is not None and area
                        else (row["pixels"] / pixels if pixels else 0.0))
        rows.append(row)
    return rows


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


def write_zones(out_dir: Path, stats: ItemStats) -> Path:
    """``zones.csv``: one row per zone on the item and class (only the header when no zone lies
    on it)."""
    path = out_dir / "zones.csv"
    atomic_write_text(path, _csv(_zone_rows(stats), _ZONE_COLUMNS))
    return path


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
    zone_rows = zone_summary_rows(outcomes)
    if zone_rows:
        zones_path = out_root / "zones_summary.csv"
        atomic_write_text(zones_path, _csv(zone_rows, _ZONE_SUMMARY_COLUMNS))
        paths.append(zones_path)
    if job.get("kind") == "volume" or is_volume_job(outcomes):
        paths += write_cohort(out_root, outcomes, job)
    elif job.get("kind") == "raster":
        paths.append(write_job_report(out_root, outcomes, job, zone_rows))
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
