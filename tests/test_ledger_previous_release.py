"""Ledgers written by the previous release (tests/data/ledgers, made by its own code) still load:
their rows and statistics are read, `geoseg status` lists them, and a run into such an output
directory goes on (the item is processed again: the configuration hash now covers more)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from geoseg_pipeline.api import predict
from geoseg_pipeline.cli import main
from geoseg_pipeline.ledger import LEDGER_NAME, Ledger
from geoseg_pipeline.statistics import ItemStats

LEDGERS = Path(__file__).resolve().parent / "data" / "ledgers"


class _TwoBands(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :1], x[:, 1:2]], dim=1)


@pytest.mark.parametrize(("name", "item", "lesions"), [("d67c9fe-raster", "scene", 0), ("d67c9fe-volume", "ct", 1)])
def test_rows_and_statistics_load(tmp_path: Path, name: str, item: str, lesions: int) -> None:
    shutil.copy(LEDGERS / f"{name}.sqlite", tmp_path / LEDGER_NAME)
    ledger = Ledger(tmp_path)
    try:
        rows = ledger.rows()
    finally:
        ledger.close()
    assert [(r.item, r.status) for r in rows] == [(item, "ok")]
    assert rows[0].stats is not None
    stats = ItemStats.from_dict(rows[0].stats)
    assert stats.item == item and stats.valid_pixels > 0 and len(stats.lesions) == lesions
    assert sum(c.pixels for c in stats.classes) == stats.valid_pixels


def test_status_lists_an_old_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(LEDGERS / "d67c9fe-volume.sqlite", tmp_path / LEDGER_NAME)
    assert main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ct" in out and "ok" in out


def test_a_run_into_an_old_output_directory_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(LEDGERS / "d67c9fe-raster.sqlite", out / LEDGER_NAME)
    data = np.random.default_rng(0).integers(0, 255, (3, 40, 50)).astype("uint8")
    with rasterio.open(tmp_path / "scene.tif", "w", driver="GTiff", width=50, height=40, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 5200000, 10, 10)) as ds:
        ds.write(data)
    torch.jit.script(_TwoBands()).save(str(tmp_path / "m.pt"))
    result = predict([tmp_path / "scene.tif"], str(tmp_path / "m.pt"), out, roi_size=[32, 32], progress=False)
    assert [o.status for o in result.outcomes] == ["ok"]
    assert (out / "scene" / "labels.tif").is_file()
    again = predict([tmp_path / "scene.tif"], str(tmp_path / "m.pt"), out, roi_size=[32, 32], progress=False)
    assert [o.status for o in again.outcomes] == ["skipped"]
