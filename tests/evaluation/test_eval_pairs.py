"""Pairing predictions (``<item>/labels.*``) with references (``<item>.*`` or ``<item>/labels.*``)."""

from __future__ import annotations

from pathlib import Path

from geoseg_pipeline.evaluation import find_pairs


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_references_as_files_or_folders_and_missing_sides(tmp_path: Path) -> None:
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    a = _touch(pred / "a" / "labels.tif")
    b = _touch(pred / "b" / "labels.nii.gz")
    c = _touch(pred / "c" / "labels.nii")
    _touch(pred / "only_pred" / "labels.tif")
    _touch(pred / "failed_item" / "stats.json")  # a folder without labels is no prediction
    _touch(pred / ".staging-x" / "labels.tif")  # hidden: ignored
    ra = _touch(ref / "a.tif")
    rb = _touch(ref / "b.nii.gz")
    rc = _touch(ref / "c" / "labels.nii.gz")
    _touch(ref / "only_ref.nii")
    _touch(ref / "notes.txt")

    pairs = {p.item: p for p in find_pairs(pred, ref)}

    assert list(pairs) == ["a", "b", "c", "only_pred", "only_ref"]
    assert (pairs["a"].prediction, pairs["a"].reference, pairs["a"].problem) == (a, ra, None)
    assert (pairs["b"].prediction, pairs["b"].reference, pairs["b"].kind) == (b, rb, "volume")
    assert (pairs["c"].prediction, pairs["c"].reference) == (c, rc)
    assert pairs["a"].kind == "raster"
    only_pred, only_ref = pairs["only_pred"], pairs["only_ref"]
    assert only_pred.reference is None and only_pred.problem is not None
    assert only_pred.problem.startswith("no reference") and str(ref) in only_pred.problem
    assert "only_pred.tif" in only_pred.problem
    assert only_ref.prediction is None and only_ref.problem is not None
    assert only_ref.problem.startswith("no prediction") and str(pred / "only_ref") in only_ref.problem


def test_two_references_for_one_item_are_ambiguous(tmp_path: Path) -> None:
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    _touch(pred / "a" / "labels.nii.gz")
    one, two = _touch(ref / "a.nii.gz"), _touch(ref / "a" / "labels.nii.gz")
    (pair,) = find_pairs(pred, ref)
    assert pair.problem is not None and pair.problem.startswith("ambiguous reference")
    assert str(one) in pair.problem and str(two) in pair.problem
