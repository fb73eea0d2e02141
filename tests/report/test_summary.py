"""write_summary: the cohort files of a volume job, exactly; land-cover jobs keep their summary only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from geoseg_pipeline.report import ItemOutcome, write_summary
from geoseg_pipeline.statistics import ClassStats, ItemStats

JOB = {"workflow": "ct-liver", "items_total": 3, "items_ok": 2, "items_failed": 1, "seconds": 12.5,
       "lesion_classes": [2]}

COHORT_CSV = """\
item,source,status,error,voxel_volume_mm3,background_volume_ml,liver_volume_ml,tumour_volume_ml,tumour_lesions,\
tumour_burden_ml,tumour_largest_ml,tumour_max_axial_diameter_mm
p01,/data/p01.nii.gz,ok,,2.0,100.5,20.25,3.5,2,3.5,2.0,21.0
p02,/data/p02.nii.gz,ok,,2.0,120.0,25.0,0.0,0,0.0,,
p03,/data/p03.nii.gz,failed,/data/p03.nii.gz: cannot open: truncated,,,,,,,,
"""


def test_volume_job_gets_cohort_csv_json_and_page(tmp_path: Path, ct_outcomes: list[ItemOutcome]) -> None:
    paths = write_summary(tmp_path, ct_outcomes, JOB)
    assert paths == [tmp_path / n for n in ("summary.csv", "summary.json", "cohort.csv", "cohort.json",
                                            "report.html")]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temporary files left
    assert (tmp_path / "cohort.csv").read_text(encoding="utf-8") == COHORT_CSV
    columns = COHORT_CSV.splitlines()[0].split(",")
    rows: list[list[Any]] = [
        ["p01", "/data/p01.nii.gz", "ok", None, 2.0, 100.5, 20.25, 3.5, 2, 3.5, 2.0, 21.0],
        ["p02", "/data/p02.nii.gz", "ok", None, 2.0, 120.0, 25.0, 0.0, 0, 0.0, None, None],
        ["p03", "/data/p03.nii.gz", "failed", "/data/p03.nii.gz: cannot open: truncated", *[None] * 8],
    ]
    assert json.loads((tmp_path / "cohort.json").read_text(encoding="utf-8")) == {
        "job": JOB,
        "items_total": 3,
        "items_ok": 2,
        "items_skipped": 0,
        "items_failed": 1,
        "classes": [
            {"index": 0, "name": "background", "column": "background", "lesion_class": False},
            {"index": 1, "name": "liver", "column": "liver", "lesion_class": False},
            {"index": 2, "name": "tumour", "column": "tumour", "lesion_class": True},
        ],
        "lesion_classes_from": "workflow",
        "columns": columns,
        "items": [dict(zip(columns, r, strict=True)) for r in rows],
        "lesion_summary": [{"class_index": 2, "class_name": "tumour", "items": 2, "items_with_lesions": 1,
                            "lesions": 2, "median_burden_ml": 1.75, "max_burden_ml": 3.5}],
    }
    # the job summary is as before
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["workflow"] == "ct-liver" and [i["item"] for i in summary["items"]] == ["p01", "p02", "p03"]


def test_lesion_classes_observed_when_the_job_record_has_none(tmp_path: Path, ct_outcomes: list[ItemOutcome]) -> None:
    job = {k: v for k, v in JOB.items() if k != "lesion_classes"}
    write_summary(tmp_path, ct_outcomes, job)
    assert (tmp_path / "cohort.csv").read_text(encoding="utf-8") == COHORT_CSV
    assert json.loads((tmp_path / "cohort.json").read_text(encoding="utf-8"))["lesion_classes_from"] == "observed"


def test_land_cover_job_keeps_its_summary_only(tmp_path: Path) -> None:
    stats = ItemStats("s", (ClassStats(0, "water", 7, 700.0, 0.4375), ClassStats(1, "land", 9, 900.0, 0.5625)),
                      16, 0, 1600.0, "planar", "")
    outcomes = [ItemOutcome("s", "/d/s.tif", "ok", stats=stats), ItemOutcome("t", "/d/t.tif", "failed", error="boom")]
    paths = write_summary(tmp_path, outcomes, {"workflow": "landcover"})
    assert paths == [tmp_path / "summary.csv", tmp_path / "summary.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv", "summary.json"]


def test_volume_job_with_every_item_failed_has_no_cohort(tmp_path: Path, ct_outcomes: list[ItemOutcome]) -> None:
    assert write_summary(tmp_path, ct_outcomes[2:], JOB) == [tmp_path / "summary.csv", tmp_path / "summary.json"]
