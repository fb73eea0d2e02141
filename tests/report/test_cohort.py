"""The cohort table as data: columns, rows, lesion classes, column names from class names."""

from __future__ import annotations

from collections.abc import Callable

from geoseg_pipeline.report import ItemOutcome
from geoseg_pipeline.report.cohort import (
    cohort_classes,
    cohort_document,
    cohort_table,
    column_key,
    is_volume_job,
    lesion_summary,
)
from geoseg_pipeline.statistics import ClassStats, ItemStats, Lesion

COLUMNS = ("item", "source", "status", "error", "voxel_volume_mm3", "background_volume_ml", "liver_volume_ml",
           "tumour_volume_ml", "tumour_lesions", "tumour_burden_ml", "tumour_largest_ml",
           "tumour_max_axial_diameter_mm")


def test_rows_with_lesion_classes_from_the_workflow(ct_outcomes: list[ItemOutcome]) -> None:
    table = cohort_table(ct_outcomes, [2])
    assert table.columns == COLUMNS
    assert table.lesion_classes_from == "workflow"
    assert [c.key for c in table.lesion_classes] == ["tumour"]
    assert table.rows == (
        dict(zip(COLUMNS, ("p01", "/data/p01.nii.gz", "ok", None, 2.0, 100.5, 20.25, 3.5, 2, 3.5, 2.0, 21.0),
                 strict=True)),
        dict(zip(COLUMNS, ("p02", "/data/p02.nii.gz", "ok", None, 2.0, 120.0, 25.0, 0.0, 0, 0.0, None, None),
                 strict=True)),
        dict(zip(COLUMNS, ("p03", "/data/p03.nii.gz", "failed", "/data/p03.nii.gz: cannot open: truncated",
                           *[None] * 8), strict=True)),
    )


def test_lesion_classes_observed_without_a_workflow_list(ct_outcomes: list[ItemOutcome]) -> None:
    table = cohort_table(ct_outcomes)
    assert table.columns == COLUMNS
    assert table.lesion_classes_from == "observed"
    # no item has a lesion: nothing says which class is a lesion class
    table = cohort_table(ct_outcomes[1:])
    assert table.columns == COLUMNS[:8]
    # the workflow list also names classes that no item has a lesion of, and may name several
    table = cohort_table(ct_outcomes[1:], [1, 2])
    assert table.columns[5:] == ("background_volume_ml", "liver_volume_ml", "liver_lesions", "liver_burden_ml",
                                 "liver_largest_ml", "liver_max_axial_diameter_mm", *COLUMNS[7:])


def test_lesions_are_counted_per_class(volume_stats: Callable[..., ItemStats],
                                       make_lesion: Callable[[int, int, float, float], Lesion]) -> None:
    names = ("background", "tumour core", "oedema")
    stats = volume_stats("a", (10.0, 4.0, 8.0), (make_lesion(1, 2, 6.0, 30.0), make_lesion(2, 1, 3.0, 12.5),
                                                 make_lesion(3, 2, 2.0, 31.5), make_lesion(4, 1, 1.0, 9.0)), names)
    (row,) = cohort_table([ItemOutcome("a", "/a.nii", "ok", stats=stats)], [1, 2]).rows
    assert {k: v for k, v in row.items() if k.startswith(("tumour", "oedema"))} == {
        "tumour_core_volume_ml": 4.0, "tumour_core_lesions": 2, "tumour_core_burden_ml": 4.0,
        "tumour_core_largest_ml": 3.0, "tumour_core_max_axial_diameter_mm": 12.5,
        "oedema_volume_ml": 8.0, "oedema_lesions": 2, "oedema_burden_ml": 8.0, "oedema_largest_ml": 6.0,
        "oedema_max_axial_diameter_mm": 31.5,
    }


def test_column_keys_are_unique_and_plain(volume_stats: Callable[..., ItemStats]) -> None:
    names = ("Background", "Tumour", "tumour", "+++", "Nécrose (core)")
    stats = volume_stats("a", (1.0, 2.0, 3.0, 4.0, 5.0), names=names)
    classes = cohort_classes([ItemOutcome("a", "/a.nii", "ok", stats=stats)], [2])
    assert [(c.index, c.name, c.key, c.lesion_class) for c in classes] == [
        (0, "Background", "background", False), (1, "Tumour", "tumour", False), (2, "tumour", "tumour_2", True),
        (3, "+++", "class_3", False), (4, "Nécrose (core)", "nécrose_core", False),
    ]
    assert column_key("  Left lung, upper lobe ") == "left_lung_upper_lobe"


def test_only_jobs_with_voxel_volumes_are_volume_jobs(ct_outcomes: list[ItemOutcome]) -> None:
    land = ItemStats("s", (ClassStats(0, "water", 4, 400.0, 1.0),), 4, 0, 400.0, "planar", "")
    assert is_volume_job(ct_outcomes)
    assert not is_volume_job([ItemOutcome("s", "/s.tif", "ok", stats=land)])
    assert not is_volume_job(ct_outcomes[2:])  # nothing finished: nothing to tell the kind by
    assert not is_volume_job([])


def test_lesion_summary_and_document(ct_outcomes: list[ItemOutcome]) -> None:
    table = cohort_table(ct_outcomes, [2])
    assert lesion_summary(table) == [{
        "class_index": 2, "class_name": "tumour", "items": 2, "items_with_lesions": 1, "lesions": 2,
        "median_burden_ml": 1.75, "max_burden_ml": 3.5,
    }]
    doc = cohort_document(table, {"workflow": "ct"})
    assert doc["job"] == {"workflow": "ct"}
    assert (doc["items_total"], doc["items_ok"], doc["items_failed"]) == (3, 2, 1)
    assert doc["classes"] == [
        {"index": 0, "name": "background", "column": "background", "lesion_class": False},
        {"index": 1, "name": "liver", "column": "liver", "lesion_class": False},
        {"index": 2, "name": "tumour", "column": "tumour", "lesion_class": True},
    ]
    assert doc["columns"] == list(COLUMNS) and doc["items"] == [dict(r) for r in table.rows]
