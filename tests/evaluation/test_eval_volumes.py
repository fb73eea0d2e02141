"""``evaluate`` on NIfTI volumes: known metrics in mm and mL, absent classes, grid mismatches,
unpaired items, and the files written."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from geoseg_pipeline.errors import GeosegError, InputDataError, SourceError, SpecError
from geoseg_pipeline.evaluation import EvaluationResult, evaluate

SHAPE = (8, 8, 6)
VOXEL_ML = 1.0 * 2.0 * 3.0 / 1000  # the fixture's default affine: 1 x 2 x 3 mm


def _labels(*voxels: tuple[tuple[slice | int, ...], int]) -> np.ndarray:
    out = np.zeros(SHAPE, np.uint8)
    for where, k in voxels:
        out[where] = k
    return out


@pytest.fixture()
def cohort(tmp_path: Path, write_nii: Callable[..., Path]) -> tuple[Path, Path]:
    """Prediction and reference folders with one item of each kind of outcome."""
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    # a: class 1 shifted one voxel along k (3 mm); class 2 only in the reference; class 3 only predicted
    write_nii(pred / "a" / "labels.nii.gz", _labels((np.s_[2:4, 2:4, 2:4], 1), (np.s_[0, 0, 0], 3)))
    write_nii(ref / "a.nii.gz", _labels((np.s_[2:4, 2:4, 1:3], 1), (np.s_[6, 6, 5], 2)))
    # b: perfect; the reference is a folder like a prediction's
    write_nii(pred / "b" / "labels.nii.gz", _labels((np.s_[0:2, 0:2, 0:2], 1)))
    write_nii(ref / "b" / "labels.nii.gz", _labels((np.s_[0:2, 0:2, 0:2], 1)))
    # c: shape mismatch; d: affine mismatch; e: no reference; f: no prediction
    write_nii(pred / "c" / "labels.nii.gz", _labels())
    write_nii(ref / "c.nii", np.zeros((8, 8, 5), np.uint8))
    write_nii(pred / "d" / "labels.nii.gz", _labels())
    write_nii(ref / "d.nii.gz", _labels(), np.diag([1.0, 2.0, 3.001, 1.0]))
    write_nii(pred / "e" / "labels.nii.gz", _labels())
    write_nii(ref / "f.nii.gz", _labels())
    return pred, ref


def test_known_metrics_in_mm_and_ml(cohort: tuple[Path, Path]) -> None:
    result = evaluate(*cohort)
    a = result.item("a")
    assert a.status == "ok" and a.hd95_unit == "mm" and a.size_unit == "mL"
    assert result.classes == (1, 2, 3)
    c1, c2, c3 = a.classes
    assert (c1.presence, c1.dice, c1.iou, c1.hd95) == pytest.approx(("both", 0.5, 1 / 3, 3.0))
    assert (c1.pred_count, c1.ref_count) == (8, 8)
    assert (c1.pred_size, c1.ref_size) == pytest.approx((8 * VOXEL_ML, 8 * VOXEL_ML))
    assert c1.difference == pytest.approx(0.0) and c1.relative_difference == pytest.approx(0.0)
    # missed class: Dice 0, no distance; the whole reference volume is missing
    assert (c2.presence, c2.dice, c2.iou, c2.hd95) == ("reference_only", 0.0, 0.0, None)
    assert c2.difference == pytest.approx(-VOXEL_ML) and c2.relative_difference == pytest.approx(-1.0)
    # false positive: Dice 0, no distance, no relative difference (empty reference)
    assert (c3.presence, c3.dice, c3.hd95, c3.relative_difference) == ("prediction_only", 0.0, None, None)
    assert c3.difference == pytest.approx(VOXEL_ML)


def test_classes_absent_from_an_item_are_reported_as_neither(cohort: tuple[Path, Path]) -> None:
    result = evaluate(*cohort, classes=[1, 2, 3, 4])
    b = result.item("b")
    assert [(c.class_index, c.presence, c.dice, c.iou, c.hd95) for c in b.classes] == [
        (1, "both", pytest.approx(1.0), pytest.approx(1.0), 0.0),
        (2, "neither", None, None, None),
        (3, "neither", None, None, None),
        (4, "neither", None, None, None),
    ]
    assert all(c.pred_size == 0.0 and c.ref_size == 0.0 for c in b.classes[1:])
    s2 = result.summary[1]
    assert (s2.items, s2.both, s2.neither, s2.reference_only, s2.prediction_only) == (2, 0, 1, 1, 0)
    assert s2.metric("dice").n == 1  # the miss counts (0.0); the absent class does not
    s4 = result.summary[3]
    assert (s4.neither, s4.metric("dice").n, s4.metric("dice").mean) == (2, 0, None)


def test_summary_over_items(cohort: tuple[Path, Path]) -> None:
    s1 = evaluate(*cohort).summary[0]
    dice = s1.metric("dice")
    assert (dice.mean, dice.median, dice.n) == pytest.approx((0.75, 0.75, 2))
    assert dice.std == pytest.approx(math.sqrt(2) / 4)  # sample std of 0.5 and 1.0
    assert s1.metric("hd95_mm").mean == pytest.approx(1.5)
    assert s1.metric("volume_difference_ml").n == 2


def test_unpaired_and_mismatched_items_are_listed_with_their_reason(cohort: tuple[Path, Path]) -> None:
    pred, ref = cohort
    result = evaluate(pred, ref)
    status = {i.item: i.status for i in result.items}
    assert status == {"a": "ok", "b": "ok", "c": "failed", "d": "failed", "e": "no_reference",
                      "f": "no_prediction"}
    c, d = result.item("c"), result.item("d")
    assert c.error is not None and d.error is not None
    assert "shape mismatch" in c.error and "(8, 8, 6)" in c.error and "(8, 8, 5)" in c.error
    assert str(pred / "c" / "labels.nii.gz") in c.error and str(ref / "c.nii") in c.error
    assert "affine mismatch" in d.error and "3.001" in d.error
    assert str(pred / "d" / "labels.nii.gz") in d.error and str(ref / "d.nii.gz") in d.error
    assert {i.item for i in result.not_evaluated} == {"c", "d", "e", "f"}
    assert all(i.classes == () for i in result.not_evaluated)


def test_affines_within_tolerance_match(tmp_path: Path, write_nii: Callable[..., Path]) -> None:
    write_nii(tmp_path / "p" / "x" / "labels.nii.gz", _labels((np.s_[1:3, 1:3, 1:3], 1)))
    write_nii(tmp_path / "r" / "x.nii.gz", _labels((np.s_[1:3, 1:3, 1:3], 1)), np.diag([1.0, 2.0, 3.00005, 1.0]))
    assert evaluate(tmp_path / "p", tmp_path / "r").item("x").status == "ok"


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_csv_and_json_files(cohort: tuple[Path, Path]) -> None:
    pred, ref = cohort
    result = evaluate(pred, ref, class_names=["background", "liver", "tumour"])
    assert result.outputs == (pred / "evaluation.csv", pred / "evaluation_summary.csv",
                              pred / "evaluation_summary.json")
    assert sorted(p.name for p in pred.iterdir() if p.is_file()) == sorted(p.name for p in result.outputs)

    rows = _read_csv(pred / "evaluation.csv")
    assert list(rows[0]) == [
        "item", "class_index", "class_name", "presence", "dice", "iou", "hd95", "hd95_unit", "pred_voxels",
        "ref_voxels", "pred_volume_ml", "ref_volume_ml", "volume_difference_ml", "volume_relative_difference",
        "status", "error", "prediction", "reference",
    ]
    by_key = {(r["item"], r["class_index"]): r for r in rows}
    a1 = by_key["a", "1"]
    assert (a1["class_name"], a1["presence"], float(a1["dice"]), float(a1["hd95"]), a1["hd95_unit"]) == pytest.approx(
        ("liver", "both", 0.5, 3.0, "mm"))
    assert (a1["pred_voxels"], float(a1["ref_volume_ml"]), a1["status"], a1["error"]) == pytest.approx(
        ("8", 0.048, "ok", ""))
    a3 = by_key["a", "3"]
    assert (a3["class_name"], a3["presence"], a3["hd95"], a3["volume_relative_difference"]) == (
        "class_3", "prediction_only", "", "")
    b2 = by_key["b", "2"]
    assert (b2["presence"], b2["dice"], b2["iou"], b2["pred_volume_ml"]) == ("neither", "", "", "0.0")
    assert by_key["e", ""]["status"] == "no_reference" and by_key["e", ""]["dice"] == ""
    assert by_key["e", ""]["error"].startswith("no reference")
    assert by_key["c", ""]["status"] == "failed" and "shape mismatch" in by_key["c", ""]["error"]
    assert len(rows) == 2 * 3 + 4  # two items x three classes, four items not evaluated

    summary = _read_csv(pred / "evaluation_summary.csv")
    assert [r["class_name"] for r in summary] == ["liver", "tumour", "class_3"]
    assert float(summary[0]["dice_mean"]) == pytest.approx(0.75) and summary[0]["dice_n"] == "2"
    assert summary[1]["hd95_mm_mean"] == "" and summary[1]["hd95_mm_n"] == "0"

    doc = json.loads((pred / "evaluation_summary.json").read_text(encoding="utf-8"))
    assert (doc["items_total"], doc["items_ok"], doc["items_failed"], doc["items_no_reference"],
            doc["items_no_prediction"]) == (6, 2, 2, 1, 1)
    assert doc["classes"][0]["metrics"]["dice"]["mean"] == pytest.approx(0.75)
    assert doc["classes"][1]["metrics"]["hd95_mm"] == {"mean": None, "median": None, "std": None, "n": 0}


def test_out_folder_and_rerun_overwrites(cohort: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "reports" / "eval"
    first = evaluate(*cohort, out=out)
    second = evaluate(*cohort, out=out, classes=[1])
    assert first.outputs[0].parent == out
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in second.outputs)  # no temporaries
    assert {r["class_index"] for r in _read_csv(out / "evaluation.csv")} == {"1", ""}


def test_float_references_with_integer_values_are_accepted(tmp_path: Path, write_nii: Callable[..., Path]) -> None:
    write_nii(tmp_path / "p" / "x" / "labels.nii.gz", _labels((np.s_[1:3, 1:3, 1:3], 1)))
    write_nii(tmp_path / "r" / "x.nii.gz", _labels((np.s_[1:3, 1:3, 1:3], 1)).astype(np.float32))
    write_nii(tmp_path / "p" / "y" / "labels.nii.gz", _labels())
    write_nii(tmp_path / "r" / "y.nii.gz", np.full(SHAPE, 0.5, np.float32))
    write_nii(tmp_path / "p" / "z" / "labels.nii.gz", _labels())
    write_nii(tmp_path / "r" / "z.nii.gz", np.full(SHAPE, -1, np.int16))
    result = evaluate(tmp_path / "p", tmp_path / "r")
    assert result.item("x").classes[0].dice == pytest.approx(1.0)
    assert "non-integer" in (result.item("y").error or "")
    assert ">= 0" in (result.item("z").error or "")


def test_a_corrupt_file_fails_its_item_only(tmp_path: Path, write_nii: Callable[..., Path]) -> None:
    write_nii(tmp_path / "p" / "x" / "labels.nii.gz", _labels((np.s_[1:3, 1:3, 1:3], 1)))
    write_nii(tmp_path / "r" / "x.nii.gz", _labels((np.s_[1:3, 1:3, 1:3], 1)))
    write_nii(tmp_path / "p" / "y" / "labels.nii.gz", _labels())
    good = (tmp_path / "r" / "x.nii.gz").read_bytes()
    (tmp_path / "r" / "y.nii.gz").write_bytes(good[: len(good) // 2])
    result = evaluate(tmp_path / "p", tmp_path / "r")
    assert result.item("x").status == "ok"
    y = result.item("y")
    assert y.status == "failed" and y.error is not None and str(tmp_path / "r" / "y.nii.gz") in y.error


def test_volume_spacing_comes_from_an_oblique_affine(tmp_path: Path, write_nii: Callable[..., Path]) -> None:
    # axes permuted and flipped (a LPS-like affine): spacing is the norm of each voxel axis
    affine = np.array([[0.0, -2.0, 0.0, 10.0], [-1.0, 0.0, 0.0, 5.0], [0.0, 0.0, 3.0, -7.0], [0, 0, 0, 1]])
    ref = _labels((np.s_[2:4, 2:4, 2:4], 1))
    write_nii(tmp_path / "r" / "x.nii.gz", ref, affine)
    write_nii(tmp_path / "p" / "x" / "labels.nii.gz", np.roll(ref, 1, axis=1), affine)
    result: EvaluationResult = evaluate(tmp_path / "p", tmp_path / "r")
    assert result.item("x").classes[0].hd95 == pytest.approx(2.0)  # axis j is 2 mm long


def test_bad_arguments(cohort: tuple[Path, Path], tmp_path: Path) -> None:
    pred, ref = cohort
    with pytest.raises(SourceError, match="does not exist"):
        evaluate(tmp_path / "missing", ref)
    with pytest.raises(SpecError, match="same"):
        evaluate(pred, pred)
    with pytest.raises(SpecError, match=">= 0"):
        evaluate(pred, ref, classes=[1, -2])
    with pytest.raises(SpecError, match="repeat"):
        evaluate(pred, ref, classes=[1, 1])
    (tmp_path / "empty_p").mkdir()
    (tmp_path / "empty_r").mkdir()
    with pytest.raises(InputDataError, match="nothing to evaluate") as info:
        evaluate(tmp_path / "empty_p", tmp_path / "empty_r")
    assert isinstance(info.value, GeosegError)


def test_nifti_with_a_trailing_axis_of_one(tmp_path: Path, write_nii: Callable[..., Path]) -> None:
    labels = _labels((np.s_[1:3, 1:3, 1:3], 1))
    write_nii(tmp_path / "p" / "x" / "labels.nii.gz", labels)
    (tmp_path / "r").mkdir()
    image = nib.Nifti1Image(labels[..., None], np.diag([1.0, 2.0, 3.0, 1.0]))  # type: ignore[no-untyped-call]
    nib.save(image, tmp_path / "r" / "x.nii.gz")
    assert evaluate(tmp_path / "p", tmp_path / "r").item("x").classes[0].dice == pytest.approx(1.0)


def test_without_hausdorff_and_with_named_classes(cohort: tuple[Path, Path]) -> None:
    result = evaluate(*cohort, hausdorff=False, class_names={1: "liver", 3: "cyst"})
    a = result.item("a")
    assert a.hd95_unit is None and all(c.hd95 is None for c in a.classes)
    assert [c.class_name for c in a.classes] == ["liver", "class_2", "cyst"]
    assert [m.metric for m in result.summary[0].metrics] == ["dice", "iou", "volume_difference_ml",
                                                             "volume_relative_difference"]
    with pytest.raises(SpecError, match="class_names"):
        evaluate(*cohort, class_names="liver")
