"""``geoseg demo stac``: a generated static catalog of Sentinel-2-like items (bands in separate
files at 10 m and 20 m, a scene classification with clouds) segmented as it is, through the
command line and a real local Ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from stac_schemas import assert_valid

from geoseg_pipeline.cli import main
from geoseg_pipeline.demo.stac_demo import SCL_INVALID, STAC_SCENES, stac_workflow


def test_shipped_stac_workflow_matches_the_demo() -> None:
    shipped = Path(__file__).resolve().parents[2] / "workflows" / "landcover-stac-demo.yaml"
    assert yaml.safe_load(shipped.read_text(encoding="utf-8")) == stac_workflow()


@pytest.mark.usefixtures("ray_local")
def test_demo_stac_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--no-progress", "demo", "stac", "--out", str(tmp_path)]) == 0
    assert "2 item(s) done, 0 failed" in capsys.readouterr().out  # the cloudy third item is filtered out
    kept = [s[0] for s in STAC_SCENES[:2]]
    assert sorted(p.name for p in (tmp_path / "stac").iterdir() if p.is_dir()) == kept
    for item_id in kept:
        folder = tmp_path / "data-stac" / item_id
        with rasterio.open(tmp_path / "stac" / item_id / "labels.tif") as out, \
                rasterio.open(tmp_path / "data-stac" / f"{item_id}_reference.tif") as ref, \
                rasterio.open(folder / "B02.tif") as b02:
            pred, truth = out.read(1), ref.read(1)
            assert (out.crs, out.transform, out.shape) == (b02.crs, b02.transform, b02.shape)  # the 10 m grid
        with rasterio.open(folder / "SCL.tif") as ds:
            scl = np.repeat(np.repeat(ds.read(1), 2, 0), 2, 1)
        stack = []
        for key in ("B02", "B03", "B04"):
            with rasterio.open(folder / f"{key}.tif") as ds:
                stack.append(ds.read(1))
        masked = np.isin(scl, SCL_INVALID)
        assert masked.mean() > 0.1  # clouds, shadows and the no-data edge
        # nodata where the mask says so, and elsewhere only where the bands are empty
        assert (pred[masked] == 255).all()
        assert (np.stack(stack)[:, (pred == 255) & ~masked] == 0).all()
        valid = ~masked & (truth != 255)
        assert (pred[valid] == truth[valid]).mean() > 0.98
        doc = assert_valid(tmp_path / "stac" / item_id / "item.json")
        assert doc["properties"]["datetime"] == next(s[4] for s in STAC_SCENES if s[0] == item_id)
    assert_valid(tmp_path / "stac" / "collection.json")
