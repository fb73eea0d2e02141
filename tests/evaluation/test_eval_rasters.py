"""``evaluate`` on GeoTIFF label maps: HD95 in metres (projected) or pixels (geographic, no CRS),
areas in m², nodata exclusion, CRS and transform mismatches, class names from ``labels.tif``."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from geoseg_pipeline.evaluation import evaluate
from geoseg_pipeline.geometry import Grid
from geoseg_pipeline.statistics import pixel_areas

#: The fixture's default: 10 m wide, 20 m tall pixels in UTM 33N.
UTM_TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -20.0, 5200000.0)
PIXEL_M2 = 10.0 * 20.0


def _labels(shape: tuple[int, int], *boxes: tuple[tuple[slice, slice], int]) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    for where, k in boxes:
        out[where] = k
    return out


def test_projected_raster_hd95_in_metres_and_areas_in_m2(tmp_path: Path, write_tif: Callable[..., Path]) -> None:
    # class 1 moved one row down (rows are 20 m tall), class 2 one column right (columns are 10 m wide)
    ref = _labels((8, 10), (np.s_[2:4, 2:5], 1), (np.s_[5:7, 6:9], 2))
    pred = _labels((8, 10), (np.s_[3:5, 2:5], 1), (np.s_[5:7, 7:10], 2))
    write_tif(tmp_path / "p" / "s1" / "labels.tif", pred, nodata=255,
              class_names={0: "background", 1: "water", 2: "trees"})
    write_tif(tmp_path / "r" / "s1.tif", ref)
    item = evaluate(tmp_path / "p", tmp_path / "r").item("s1")
    assert (item.status, item.hd95_unit, item.size_unit) == ("ok", "m", "m2")
    water, trees = item.classes
    assert (water.class_name, water.dice, water.iou, water.hd95) == pytest.approx(("water", 0.5, 1 / 3, 20.0))
    assert (trees.class_name, trees.hd95) == pytest.approx(("trees", 10.0))
    assert (water.pred_size, water.ref_size, water.difference) == (6 * PIXEL_M2, 6 * PIXEL_M2, 0.0)


def test_nodata_in_either_file_is_excluded(tmp_path: Path, write_tif: Callable[..., Path]) -> None:
    # reference: class 1 in columns 0-2, class 2 in 3-5, row 0 nodata (255, the file's nodata)
    ref = _labels((4, 6), (np.s_[:, 0:3], 1), (np.s_[:, 3:6], 2), (np.s_[0:1, :], 255))
    # prediction: class 1 in columns 0-3, class 2 in 4-5, row 3 nodata (its own nodata, 7)
    pred = _labels((4, 6), (np.s_[:, 0:4], 1), (np.s_[:, 4:6], 2), (np.s_[3:4, :], 7))
    write_tif(tmp_path / "p" / "s" / "labels.tif", pred, nodata=7)
    write_tif(tmp_path / "r" / "s.tif", ref, nodata=255)
    item = evaluate(tmp_path / "p", tmp_path / "r").item("s")
    # rows 1-2 are valid in both: class 1 has 8 predicted, 6 reference pixels, 6 shared; class 2: 4, 6, 4
    assert [c.class_index for c in item.classes] == [1, 2]  # neither 7 nor 255 is a class
    c1, c2 = item.classes
    assert (c1.pred_count, c1.ref_count, c1.dice, c1.iou) == pytest.approx((8, 6, 12 / 14, 6 / 8))
    assert (c2.pred_count, c2.ref_count, c2.dice, c2.iou) == pytest.approx((4, 6, 8 / 10, 4 / 6))
    assert c1.relative_difference == pytest.approx(2 / 6)
    assert c1.hd95 == pytest.approx(10.0)  # the extra column is one column (10 m) from the reference


def test_geographic_raster_hd95_in_pixels_and_geodesic_areas(tmp_path: Path,
                                                             write_tif: Callable[..., Path]) -> None:
    transform = Affine(0.001, 0.0, 10.0, 0.0, -0.001, 50.0)
    ref = _labels((6, 6), (np.s_[1:3, 1:4], 1))
    pred = _labels((6, 6), (np.s_[2:4, 1:4], 1))
    write_tif(tmp_path / "p" / "g" / "labels.tif", pred, crs="EPSG:4326", transform=transform)
    write_tif(tmp_path / "r" / "g.tif", ref, crs="EPSG:4326", transform=transform)
    item = evaluate(tmp_path / "p", tmp_path / "r").item("g")
    assert (item.hd95_unit, item.size_unit) == ("px", "m2")
    (c,) = item.classes
    assert c.hd95 == pytest.approx(1.0)
    rows = pixel_areas(Grid((6, 6), transform, "EPSG:4326")).row_area_m2
    assert rows is not None
    assert c.ref_size == pytest.approx(3 * (rows[1] + rows[2]))
    assert c.pred_size == pytest.approx(3 * (rows[2] + rows[3]))
    assert c.relative_difference == pytest.approx((rows[3] - rows[1]) / (rows[1] + rows[2]))


def test_raster_without_crs_in_pixels_without_areas(tmp_path: Path, write_tif: Callable[..., Path]) -> None:
    ref = _labels((5, 5), (np.s_[1:3, 1:3], 1))
    pred = _labels((5, 5), (np.s_[1:3, 1:4], 1))
    write_tif(tmp_path / "p" / "n" / "labels.tif", pred, crs=None, transform=Affine.identity())
    write_tif(tmp_path / "r" / "n.tif", ref, crs=None, transform=Affine.identity())
    result = evaluate(tmp_path / "p", tmp_path / "r")
    item = result.item("n")
    assert (item.hd95_unit, item.size_unit) == ("px", None)
    (c,) = item.classes
    assert (c.hd95, c.pred_size, c.difference) == pytest.approx((1.0, None, None))
    assert c.relative_difference == pytest.approx(2 / 4)  # from pixel counts
    with (tmp_path / "p" / "evaluation.csv").open(newline="", encoding="utf-8") as f:
        (row,) = csv.DictReader(f)
    assert (row["pred_pixels"], row["pred_area_m2"], row["area_relative_difference"]) == ("6", "", "0.5")
    assert "pred_volume_ml" not in row


@pytest.mark.parametrize(
    ("crs", "transform", "expected"),
    [
        ("EPSG:32632", UTM_TRANSFORM, ["CRS mismatch", "EPSG:32633", "EPSG:32632"]),
        ("EPSG:32633", UTM_TRANSFORM @ Affine.translation(0.5, 0), ["transform mismatch", "500005.0"]),
        (None, UTM_TRANSFORM, ["CRS mismatch", "no CRS"]),
    ],
)
def test_grid_mismatch_fails_the_item(tmp_path: Path, write_tif: Callable[..., Path], crs: str | None,
                                      transform: Affine, expected: list[str]) -> None:
    labels = _labels((4, 4), (np.s_[1:3, 1:3], 1))
    pred_path = write_tif(tmp_path / "p" / "m" / "labels.tif", labels)
    ref_path = write_tif(tmp_path / "r" / "m.tif", labels, crs=crs, transform=transform)
    write_tif(tmp_path / "p" / "ok" / "labels.tif", labels)
    write_tif(tmp_path / "r" / "ok.tif", labels)
    result = evaluate(tmp_path / "p", tmp_path / "r")
    assert result.item("ok").status == "ok"
    m = result.item("m")
    assert m.status == "failed" and m.error is not None
    assert str(pred_path) in m.error and str(ref_path) in m.error
    for text in expected:
        assert text in m.error


def test_transforms_within_a_thousandth_of_a_pixel_match(tmp_path: Path, write_tif: Callable[..., Path]) -> None:
    labels = _labels((4, 4), (np.s_[1:3, 1:3], 1))
    write_tif(tmp_path / "p" / "t" / "labels.tif", labels)
    write_tif(tmp_path / "r" / "t.tif", labels, transform=UTM_TRANSFORM @ Affine.translation(1e-4, -1e-4))
    assert evaluate(tmp_path / "p", tmp_path / "r").item("t").status == "ok"


def test_raster_and_volume_items_in_one_run(tmp_path: Path, write_tif: Callable[..., Path],
                                            write_nii: Callable[..., Path]) -> None:
    write_tif(tmp_path / "p" / "s" / "labels.tif", _labels((4, 4), (np.s_[1:3, 1:3], 1)))
    write_tif(tmp_path / "r" / "s.tif", _labels((4, 4), (np.s_[1:3, 1:3], 1)))
    vol = np.zeros((4, 4, 4), np.uint8)
    vol[1:3, 1:3, 1:3] = 1
    write_nii(tmp_path / "p" / "v" / "labels.nii.gz", vol)
    write_nii(tmp_path / "r" / "v.nii.gz", vol)
    result = evaluate(tmp_path / "p", tmp_path / "r")
    names = [m.metric for m in result.summary[0].metrics]
    assert names == ["dice", "iou", "hd95_mm", "hd95_m", "volume_difference_ml", "volume_relative_difference",
                     "area_difference_m2", "area_relative_difference"]
    assert result.summary[0].metric("dice").n == 2


def test_float_reference_with_nan_nodata(tmp_path: Path, write_tif: Callable[..., Path]) -> None:
    ref = _labels((4, 4), (np.s_[0:2, :], 1)).astype(np.float32)
    ref[0, :] = np.nan  # unlabelled
    pred = _labels((4, 4), (np.s_[0:2, :], 1))
    write_tif(tmp_path / "p" / "f" / "labels.tif", pred, nodata=255)
    write_tif(tmp_path / "r" / "f.tif", ref, nodata=float("nan"))
    (c,) = evaluate(tmp_path / "p", tmp_path / "r").item("f").classes
    assert (c.pred_count, c.ref_count, c.dice) == pytest.approx((4, 4, 1.0))
