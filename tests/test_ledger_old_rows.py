"""Re-runs over a ledger written by another version of geoseg (local backend, no Ray): rows
whose statistics have fields this version does not know, or lack fields added since, are still
finished items; statistics that cannot be read at all make the item be processed again."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geoseg_pipeline.api import run_workflow
from geoseg_pipeline.ledger import LEDGER_NAME
from geoseg_pipeline.spec import parse_workflow


@pytest.fixture()
def rerun(tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path]) -> Callable[[], Any]:
    """Run a one-item workflow into ``tmp_path/out`` (each call runs it again)."""
    scene = write_raster("scene.tif", np.random.default_rng(0).integers(1, 255, (3, 40, 50)).astype("uint8"))
    spec = parse_workflow({
        "inputs": {"paths": [str(scene)]},
        "model": {"type": "torchscript", "path": str(conv_model())},
        "tiling": {"roi_size": 32, "block_size": 64},
        "output": {"directory": str(tmp_path / "out")},
        "resources": {"workers": 1, "backend": "local"},
    }, tmp_path)
    return lambda: run_workflow(spec, progress=False)


def _edit_stats(ledger: Path, edit: Callable[[str], str]) -> None:
    with sqlite3.connect(ledger) as db:
        (stored,) = db.execute("SELECT stats FROM items WHERE item = 'scene'").fetchone()
        db.execute("UPDATE items SET stats = ? WHERE item = 'scene'", (edit(stored),))
    db.close()


def _as_older_version(stored: str) -> str:
    doc = json.loads(stored)
    del doc["voxel_volume_mm3"], doc["lesions"]  # added with volume jobs
    for c in doc["classes"]:
        del c["volume_ml"]
        c["legacy_colour"] = "#123456"  # a field this version does not know
    doc["legacy_note"] = "written by another version"
    return json.dumps(doc)


def test_rows_of_another_version_are_skipped_with_their_statistics(rerun: Callable[[], Any], tmp_path: Path) -> None:
    first = rerun()
    assert [o.status for o in first.outcomes] == ["ok"]
    _edit_stats(tmp_path / "out" / LEDGER_NAME, _as_older_version)

    again = rerun()
    assert [o.status for o in again.outcomes] == ["skipped"]  # not failed, not a crash
    assert again.outcomes[0].stats == first.outcomes[0].stats


@pytest.mark.parametrize("stored", ['{"item": "scene"}', "{not json"])
def test_rows_whose_statistics_cannot_be_read_are_processed_again(
    rerun: Callable[[], Any], tmp_path: Path, stored: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = rerun()
    _edit_stats(tmp_path / "out" / LEDGER_NAME, lambda _: stored)

    with caplog.at_level("WARNING", logger="geoseg"):
        again = rerun()
    assert [o.status for o in again.outcomes] == ["ok"]
    assert again.outcomes[0].stats == first.outcomes[0].stats
    assert "scene: the statistics recorded" in caplog.text
