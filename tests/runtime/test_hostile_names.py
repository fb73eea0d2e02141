"""Hostile and colliding item names in a manifest: nothing is written outside the output folder,
and every line has its own row, with its own reason, in the summary and the ledger."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from geoseg_pipeline.api import ledger_rows
from geoseg_pipeline.cli import main
from geoseg_pipeline.sources.discovery import Item, unique_names


def test_every_manifest_line_has_its_own_row(tmp_path: Path, write_raster: Callable[..., Path],
                                             conv_model: Callable[..., Path]) -> None:
    write_raster("x.tif", np.ones((3, 40, 40), "uint8"))
    write_raster("z.tif", np.ones((3, 40, 40), "uint8"))
    lines = ["uri,item", "x.tif,../x", "x.tif,../../y", f"x.tif,{tmp_path / 'abs'}", "x.tif,a/b", "x.tif,ok",
             "z.tif,ok ", "z.tif,fine"]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "work" / "out"
    wf = {"inputs": {"manifest": "list.csv"},
          "model": {"type": "torchscript", "path": str(conv_model(in_channels=3, classes=3)), "in_channels": 3},
          "tiling": {"roi_size": [32, 32]}, "output": {"directory": str(out)},
          "resources": {"backend": "local", "workers": 1}}
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(wf))
    assert main(["--no-progress", "run", str(tmp_path / "wf.yaml")]) == 1
    with (out / "summary.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_item = {r["item"]: r for r in rows}
    assert len(by_item) == 7 == len(lines) - 1  # one row per line (one class row for the item done)
    assert by_item["fine"]["status"] == "ok"
    failed = {k: v["error"] for k, v in by_item.items() if v["status"] == "failed"}
    assert len(failed) == 6 and len(set(failed.values())) == 6  # each with its own reason
    for line, name in ((2, "../x"), (3, "../../y"), (5, "a/b")):
        assert any(f"line {line}" in e and repr(name) in e for e in failed.values()), name
    shared = [e for e in failed.values() if "output name 'ok' is shared by 2 inputs" in e]
    assert len(shared) == 2  # 'ok' and 'ok ' collide once stripped: both refused
    assert {r.item for r in ledger_rows(out)} == set(by_item)
    assert len(json.loads((out / "summary.json").read_text())["items"]) == 7
    # nothing outside the output folder
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["out"]
    assert not (tmp_path / "abs").exists() and not (tmp_path / "y").exists()


def test_unique_names_keep_reasons() -> None:
    items = [Item("a", "/d/a.tif"), Item("a", "/e/a.tif"), Item("b", "/d/b.tif"),
             Item("c", "", error="list.csv, line 4: no path or URI"), Item("c", "", error="list.csv, line 5: no path")]
    got = unique_names(items)
    assert [i.name for i in got] == ["a#1", "a#2", "b", "c#1", "c#2"]
    assert got[0].error != got[1].error and all("/d/a.tif, /e/a.tif" in str(i.error) for i in got[:2])
    assert got[2].error is None
    assert [i.error for i in got[3:]] == [i.error for i in items[3:]]


def test_a_symlink_in_the_output_folder_is_not_followed(tmp_path: Path, write_raster: Callable[..., Path],
                                                        conv_model: Callable[..., Path]) -> None:
    scene = write_raster("scene.tif", np.ones((3, 40, 40), "uint8"))
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "scene").symlink_to(outside, target_is_directory=True)
    (outside / ".staging-old").mkdir()  # looks like a killed run's leftover: not ours to remove
    wf = {"inputs": {"paths": [str(scene)]},
          "model": {"type": "torchscript", "path": str(conv_model(in_channels=3, classes=3)), "in_channels": 3},
          "tiling": {"roi_size": [32, 32]}, "output": {"directory": str(out)},
          "resources": {"backend": "local", "workers": 1}}
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(wf))
    assert main(["--no-progress", "run", str(tmp_path / "wf.yaml")]) == 1
    assert [p.name for p in outside.iterdir()] == [".staging-old"]
    assert "is a symbolic link" in (out / "summary.csv").read_text(encoding="utf-8")
