"""Re-runs with the ledger on a real local Ray: finished items are skipped, changed ones redone."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from geoseg_pipeline.api import ledger_rows, predict
from geoseg_pipeline.cli import main

pytestmark = pytest.mark.usefixtures("ray_local")


def _statuses(result: object) -> dict[str, str]:
    return {o.item: o.status for o in result.outcomes}  # type: ignore[attr-defined]


def test_rerun_skips_done_items_and_redoes_changed_ones(
    tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    rng = np.random.default_rng(0)
    scenes = [write_raster(f"s{i}.tif", rng.integers(1, 200, (3, 70, 90)).astype("uint8")) for i in range(3)]
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff")
    model = conv_model(in_channels=3, classes=3)
    out = tmp_path / "out"

    def run(**kw: object) -> object:
        return predict([*scenes, broken], str(model), out, roi_size=32, workers=2, progress=False, **kw)

    first = run()
    assert _statuses(first) == {"s0": "ok", "s1": "ok", "s2": "ok", "broken": "failed"}
    labels = out / "s1" / "labels.tif"
    stamp = labels.stat().st_mtime_ns

    second = run()
    assert _statuses(second) == {"s0": "skipped", "s1": "skipped", "s2": "skipped", "broken": "failed"}
    assert labels.stat().st_mtime_ns == stamp  # not rewritten
    rows = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))
    assert {r["item"] for r in rows if r["status"] == "skipped" and r["class_index"] == "0"} == {"s0", "s1", "s2"}

    os.utime(scenes[1], ns=(1, 1))  # the input changed
    (out / "s2" / "stats.json").unlink()  # an output went missing
    third = run()
    assert _statuses(third) == {"s0": "skipped", "s1": "ok", "s2": "ok", "broken": "failed"}

    fourth = run(overlap=0.5)  # a setting that changes outputs
    assert _statuses(fourth) == {"s0": "ok", "s1": "ok", "s2": "ok", "broken": "failed"}
    fifth = run(overlap=0.5, force=True)
    assert _statuses(fifth) == {"s0": "ok", "s1": "ok", "s2": "ok", "broken": "failed"}

    by_item = {r.item: r for r in ledger_rows(out)}
    assert by_item["s0"].status == "ok" and by_item["s0"].seconds and by_item["s0"].outputs
    assert by_item["broken"].status == "failed" and "broken.tif" in by_item["broken"].error
    assert main(["status", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "4 item(s): 3 ok, 1 failed, 0 running" in printed and "broken.tif" in printed


def test_outputs_of_an_earlier_input_do_not_outlive_a_failed_run(
    tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path],
) -> None:
    """The input changed and now fails: the earlier outputs would look like this input's result
    (the ledger says failed, the folder says done), so they go; a run of the same input that
    fails (here with another model) keeps them."""
    rng = np.random.default_rng(5)
    scenes = [write_raster(f"s{i}.tif", rng.integers(1, 200, (3, 70, 90)).astype("uint8")) for i in range(2)]
    model = tmp_path / "three.pt"
    model.write_bytes(conv_model(in_channels=3, classes=3).read_bytes())
    out = tmp_path / "out"
    first = predict(scenes, str(model), out, roi_size=32, workers=2, progress=False, formats=["cog", "geoparquet"])
    assert _statuses(first) == {"s0": "ok", "s1": "ok"}
    published = sorted(p.name for p in (out / "s1").iterdir() if not p.name.startswith("."))
    assert "labels.tif" in published and "labels.tif.aux.xml" in published and "labels.parquet" in published

    wrong = conv_model(in_channels=4, classes=3)  # fails every item, input unchanged
    same = predict(scenes, str(wrong), out, roi_size=32, workers=2, progress=False, force=True,
                   formats=["cog", "geoparquet"])
    assert _statuses(same) == {"s0": "failed", "s1": "failed"}
    assert sorted(p.name for p in (out / "s1").iterdir() if not p.name.startswith(".")) == published

    again = predict(scenes, str(model), out, roi_size=32, workers=2, progress=False, formats=["cog", "geoparquet"])
    assert _statuses(again) == {"s0": "ok", "s1": "ok"}
    scenes[1].write_bytes(scenes[1].read_bytes()[:500])  # the input changed, and is broken now
    changed = predict(scenes, str(model), out, roi_size=32, workers=2, progress=False, formats=["cog", "geoparquet"])
    assert _statuses(changed) == {"s0": "skipped", "s1": "failed"}
    error = next(o.error for o in changed.outcomes if o.item == "s1") or ""
    assert f"the {len(published)} output file(s) of run" in error and "earlier version of this input" in error
    assert not (out / "s1").exists() or not [p for p in (out / "s1").iterdir() if not p.name.startswith(".")]
    assert (out / "s0" / "labels.tif").is_file()
