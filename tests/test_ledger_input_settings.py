"""A re-run after an ``inputs`` setting that changes outputs (here ``nodata``) reprocesses the
item instead of skipping it (local backend, no Ray)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from geoseg_pipeline.api import run_workflow
from geoseg_pipeline.spec import parse_workflow

BORDER = 5


def test_setting_inputs_nodata_reprocesses_the_item_and_masks_the_border(
    tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path]
) -> None:
    data = np.random.default_rng(0).integers(1, 255, (3, 60, 70)).astype("uint8")
    border = np.ones((60, 70), bool)
    border[BORDER:-BORDER, BORDER:-BORDER] = False
    data[:, border] = 0  # a zero border, as mosaics and reprojected scenes have; no nodata in the file
    scene = write_raster("scene.tif", data)
    model = conv_model()
    out = tmp_path / "out"

    def run(**inputs: Any) -> Any:
        return run_workflow(parse_workflow({
            "inputs": {"paths": [str(scene)], **inputs},
            "model": {"type": "torchscript", "path": str(model)},
            "tiling": {"roi_size": 32, "block_size": 64},
            "output": {"directory": str(out)},
            "resources": {"workers": 1, "backend": "local"},
        }, tmp_path), progress=False)

    first = run()
    assert [o.status for o in first.outcomes] == ["ok"]
    assert first.outcomes[0].stats.nodata_pixels == 0

    second = run(nodata=0)
    assert [o.status for o in second.outcomes] == ["ok"]  # not "skipped": the outputs depend on nodata
    assert second.outcomes[0].stats.nodata_pixels == int(border.sum())
    with rasterio.open(out / "scene" / "labels.tif") as ds:
        labels = ds.read(1)
        assert ds.nodata is not None
    assert (labels[border] == ds.nodata).all()
    assert (labels[~border] != ds.nodata).all()

    third = run(nodata=0)
    assert [o.status for o in third.outcomes] == ["skipped"]
