"""Predictions written by geoseg's own sinks (COG with nodata 255 and class tags; NIfTI with the
Slicer colour table), as ``geoseg predict`` leaves them, against plain reference files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from geoseg_pipeline.evaluation import evaluate
from geoseg_pipeline.geometry import Grid, full_window
from geoseg_pipeline.sinks import ClassLegend, CogLabelSink
from geoseg_pipeline.sinks.nifti import NiftiLabelSink
from geoseg_pipeline.volumes import VolumeGrid

LEGEND = ClassLegend(("background", "water", "trees"), ("#000000", "#419bdf", "#397d49"))


def test_cog_prediction_with_nodata_and_names(tmp_path: Path, write_tif: Callable[..., Path]) -> None:
    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0)
    pred = np.zeros((32, 32), np.uint8)
    pred[4:12, 4:12] = 1
    pred[20:28, 20:28] = 2
    pred[:, 30:] = 255  # nodata in the prediction (no valid input there)
    ref = pred.copy()
    ref[:, 30:] = 2  # the reference has labels there: they must not count
    ref[4:12, 12] = 1  # one extra column of water in the reference
    sink = CogLabelSink(tmp_path / "pred" / "scene", Grid((32, 32), transform, "EPSG:32633"), LEGEND, 255)
    sink.write(full_window((32, 32)), pred)
    sink.commit()
    write_tif(tmp_path / "ref" / "scene.tif", ref, transform=transform)

    result = evaluate(tmp_path / "pred", tmp_path / "ref")

    item = result.item("scene")
    assert [(c.class_index, c.class_name) for c in item.classes] == [(1, "water"), (2, "trees")]
    water, trees = item.classes
    assert (water.pred_count, water.ref_count, water.dice) == pytest.approx((64, 72, 128 / 136))
    assert water.hd95 == pytest.approx(10.0)  # the missed column is one pixel (10 m) away
    assert (trees.pred_count, trees.ref_count, trees.dice, trees.hd95) == pytest.approx((64, 64, 1.0, 0.0))
    assert (water.pred_size, water.ref_size) == pytest.approx((6400.0, 7200.0))
    assert (tmp_path / "pred" / "evaluation.csv").is_file()


def test_nifti_prediction_with_colour_table(tmp_path: Path, write_nii: Callable[..., Path]) -> None:
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    labels = np.zeros((16, 16, 8), np.uint8)
    labels[4:10, 4:10, 2:6] = 1
    labels[6:8, 6:8, 3:5] = 2
    sink = NiftiLabelSink(tmp_path / "pred" / "ct", VolumeGrid((16, 16, 8), affine), None,
                          ClassLegend(("background", "liver", "tumour core"), ("#000000", "#a6611a", "#e31a1c")),
                          None)
    sink.write(full_window((16, 16, 8)), labels)
    sink.commit()
    write_nii(tmp_path / "ref" / "ct.nii.gz", labels, affine)

    result = evaluate(tmp_path / "pred", tmp_path / "ref", include_background=True)

    item = result.item("ct")
    assert [c.class_name for c in item.classes] == ["background", "liver", "tumour_core"]
    assert all(c.dice == pytest.approx(1.0) and c.hd95 == 0.0 for c in item.classes)
    assert item.classes[2].ref_size == pytest.approx(8 * 0.8 * 0.8 * 2.5 / 1000)  # 8 voxels of 1.6 mm³
