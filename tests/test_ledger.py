"""The run ledger: records, fingerprints and hashes (SQLite, no Ray)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from geoseg_pipeline.errors import LedgerError
from geoseg_pipeline.ledger import ItemKey, Ledger, OutputLock, config_hash, fingerprint, model_hash
from geoseg_pipeline.spec import parse_workflow
from geoseg_pipeline.statistics import ItemStats
from geoseg_pipeline.statistics.classes import ClassStats
from geoseg_pipeline.statistics.lesions import Lesion


def test_rows_survive_reopening_and_finished_needs_same_key_and_outputs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    key = ItemKey("file:10:1", "m", "c")
    ledger = Ledger(out)
    run = ledger.start_run("wf")
    ledger.started("a", "/in/a.tif", key, run)
    assert ledger.finished("a", key) is None  # still running
    labels = out / "a" / "labels.tif"
    labels.parent.mkdir(parents=True)
    labels.write_bytes(b"x")
    ledger.succeeded("a", (str(labels),), 1.5, 12, {"item": "a"})
    ledger.failed("b", "/in/b.tif", None, run, "b: broken")
    ledger.finish_run(run, 1, 0, 1)
    ledger.close()

    again = Ledger(out)
    row = again.finished("a", key)
    assert row is not None and row.seconds == 1.5 and row.windows == 12 and row.stats == {"item": "a"}
    assert again.finished("a", ItemKey("file:10:2", "m", "c")) is None  # input changed
    assert again.finished("a", ItemKey("file:10:1", "m2", "c")) is None  # model changed
    assert again.finished("a", ItemKey("file:10:1", "m", "c2")) is None  # settings changed
    assert [(r.item, r.status, r.error) for r in again.rows()] == [("a", "ok", ""), ("b", "failed", "b: broken")]
    labels.unlink()
    assert again.finished("a", key) is None  # an output went missing
    again.started("a", "/in/a.tif", key, "run2")  # a new attempt clears the old record
    row = again.get("a")
    assert row is not None and row.status == "running" and row.outputs == () and row.run_id == "run2"


def test_one_run_at_a_time_and_killed_runs_are_marked_interrupted(tmp_path: Path) -> None:
    with OutputLock(tmp_path):
        with pytest.raises(LedgerError, match=rf"another geoseg run \(pid {os.getpid()}\)"):
            OutputLock(tmp_path)
        ledger = Ledger(tmp_path)
        killed = ledger.start_run("wf")
        ledger.started("a", "a.tif", ItemKey("f", "m", "c"), killed)
        ledger.close()
    with OutputLock(tmp_path):  # released: the next run takes it
        ledger = Ledger(tmp_path)
        ledger.mark_interrupted()
        row = ledger.get("a")
        assert row is not None and row.status == "interrupted" and "killed" in row.error
        ledger.close()


def test_unwritable_ledger_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("a file where the output directory should be")
    with pytest.raises(LedgerError, match="cannot open the run ledger"):
        Ledger(blocker)


def test_fingerprint_of_files_and_directory_stores(tmp_path: Path) -> None:
    f = tmp_path / "a.tif"
    f.write_bytes(b"1234")
    first = fingerprint(str(f))
    os.utime(f, ns=(1, 2))
    assert fingerprint(str(f)) != first
    store = tmp_path / "s.zarr"
    (store / "0").mkdir(parents=True)
    (store / "zarr.json").write_text("{}")
    (store / "0" / "c0").write_bytes(b"ab")
    before = fingerprint(str(store))
    assert fingerprint(str(store)) == before
    (store / "0" / "c1").write_bytes(b"cd")  # a chunk added
    assert fingerprint(str(store)) != before
    with pytest.raises(OSError):
        fingerprint(str(tmp_path / "missing.tif"))


def test_hashes_follow_what_changes_outputs(tmp_path: Path) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(b"weights-1")
    base = {"inputs": {"paths": ["a.tif"]}, "model": {"type": "torchscript", "path": str(model)},
            "output": {"directory": "o"}}
    spec = parse_workflow(base, tmp_path)
    moved = parse_workflow({**base, "inputs": {"paths": ["b.tif"]}, "output": {"directory": "elsewhere"},
                            "resources": {"workers": 7}}, tmp_path)
    assert config_hash(spec) == config_hash(moved)  # paths and resources do not change outputs
    assert config_hash(spec) != config_hash(parse_workflow({**base, "tiling": {"overlap": 0.5}}, tmp_path))
    first = model_hash(spec)
    model.write_bytes(b"weights-2")
    assert model_hash(spec) != first
    builtin = parse_workflow({**base, "model": {"type": "builtin", "name": "landcover-demo"}}, tmp_path)
    assert model_hash(builtin) != model_hash(spec)


def test_item_stats_round_trip() -> None:
    stats = ItemStats("ct", (ClassStats(0, "bg", 10, None, 0.9, 1.0), ClassStats(1, "t", 2, None, 0.1, 0.2)),
                      12, 0, None, "none", "", 1.6,
                      (Lesion(1, 1, 2, 0.2, (1.0, 2.0, 3.0), (0, 0, 0), (1, 0, 0), 0.8),))
    assert ItemStats.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats
