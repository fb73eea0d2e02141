"""Classes without a configured colour get distinct, readable colours (issue 15, item 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geoseg_pipeline.runtime.scheduler import legend_for
from geoseg_pipeline.sinks.legend import PALETTE, default_colours
from geoseg_pipeline.spec import parse_workflow


@pytest.mark.parametrize("count", [1, 4, 20, 21, 100, 300])
def test_default_colours_are_distinct(count: int) -> None:
    colours = default_colours(count)
    assert len(colours) == count == len(set(colours))
    assert colours[: min(count, 20)] == PALETTE[: min(count, 20)]
    assert all(len(c) == 7 and c.startswith("#") for c in colours)


def test_a_legend_keeps_given_colours_and_fills_the_others(tmp_path: Path) -> None:
    spec = parse_workflow({"inputs": {"paths": ["x.tif"]}, "model": {"type": "builtin", "name": "landcover-demo"},
                           "output": {"directory": "o"},
                           "classes": [{"name": "water", "colour": "#0000FF"}, {"name": "trees"}, {"name": "crops"}]},
                          tmp_path)
    legend = legend_for(spec, 3)
    assert legend.colours == ("#0000ff", PALETTE[1], PALETTE[2])
    assert legend_for(spec.model_copy(update={"classes": None}), 3).colours == PALETTE[:3]


def test_predict_with_class_names_writes_a_readable_colour_table(tmp_path: Path) -> None:
    from geoseg_pipeline.cli import main

    scene = tmp_path / "s.tif"
    rng = np.random.default_rng(0)
    with rasterio.open(scene, "w", driver="GTiff", width=64, height=64, count=4, dtype="uint16", crs="EPSG:32633",
                       transform=from_origin(500000, 4600000, 10, 10)) as ds:
        ds.write(rng.integers(0, 4000, (4, 64, 64)).astype("uint16"))
    assert main(["--no-progress", "predict", str(scene), "--model", "landcover-demo", "--out", str(tmp_path / "o"),
                 "--roi-size", "64", "--classes", "water,vegetation,bare_soil,built_up", "--workers", "1"]) == 0
    with rasterio.open(tmp_path / "o" / "s" / "labels.tif") as ds:
        cmap = ds.colormap(1)
    colours = {cmap[i][:3] for i in range(4)}
    assert len(colours) == 4 and (128, 128, 128) not in colours
