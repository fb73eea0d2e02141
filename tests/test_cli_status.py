"""``geoseg status OUT``: one clear line when there is nothing to show, the table otherwise."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from geoseg_pipeline.cli import main
from geoseg_pipeline.ledger import ItemKey, Ledger


def _status(out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["-q", "status", str(out)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _status(tmp_path / "nowhere", capsys)
    assert code == 1 and out == ""
    assert err == f"{tmp_path / 'nowhere'}: no such folder\n"


def test_a_file_instead_of_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "labels.tif").write_bytes(b"")
    code, out, err = _status(tmp_path / "labels.tif", capsys)
    assert code == 1 and out == ""
    assert err.startswith(f"{tmp_path / 'labels.tif'}: not a folder") and err.count("\n") == 1


def test_a_folder_without_a_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _status(tmp_path, capsys)
    assert code == 1 and out == ""
    assert err == (f"{tmp_path}: no run ledger (ledger.sqlite) here: no geoseg run has written to this folder\n")
    assert not (tmp_path / "ledger.sqlite").exists()  # looking does not create one


def test_a_ledger_without_items(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = Ledger(tmp_path)
    ledger.start_run("wf")  # a run that stopped before its first item
    ledger.close()
    code, out, err = _status(tmp_path, capsys)
    assert code == 0 and err == ""
    assert out.count("\n") == 1 and out.startswith(f"{tmp_path}: no items recorded yet")


def test_a_ledger_with_items(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = Ledger(tmp_path)
    run = ledger.start_run("wf")
    key = ItemKey("file:1:1", "m", "c")
    ledger.started("a", "/in/a.tif", key, run)
    ledger.succeeded("a", ("/out/a/labels.tif",), 1.5, 4, None)
    ledger.failed("b", "/in/b.tif", key, run, "/in/b.tif: cannot open as a raster")
    ledger.close()
    code, out, err = _status(tmp_path, capsys)
    assert code == 0 and err == ""
    assert "/in/b.tif: cannot open as a raster" in out
    assert out.splitlines()[-1].startswith("2 item(s): 1 ok, 1 failed, 0 running")


def test_a_ledger_that_is_not_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ledger.sqlite").write_bytes(b"not sqlite at all" * 100)
    code, out, err = _status(tmp_path, capsys)
    assert code == 1 and out == ""
    assert err.startswith(f"geoseg: {tmp_path / 'ledger.sqlite'}: cannot open the run ledger")
    assert err.count("\n") == 1


def test_other_states_are_counted_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = Ledger(tmp_path)
    run = ledger.start_run("wf")
    ledger.failed("a", "/in/a.tif", None, run, "boom")
    ledger.close()
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:  # a state a newer geoseg may write
        db.execute("UPDATE items SET status = 'interrupted'")
    db.close()
    code, out, _ = _status(tmp_path, capsys)
    assert code == 0
    assert out.splitlines()[-1].startswith("1 item(s): 0 ok, 0 failed, 0 running, 1 interrupted")


def test_uris_are_named_as_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Ledger(tmp_path).close()
    assert main(["-q", "status", tmp_path.as_uri()]) == 0  # file:// is a local folder
    assert capsys.readouterr().out.startswith(f"{tmp_path.as_uri()}: no items recorded yet")
    assert main(["-q", "status", "gs://bucket/nightly/"]) == 1  # never gs:/bucket/nightly
    assert capsys.readouterr().err == ("gs://bucket/nightly/: status reads a local output folder or an s3:// "
                                       "location; copy gs://bucket/nightly/ledger.sqlite into a folder (or give "
                                       "the job's staging folder)\n")
    # s3:// locations: tests/test_cli_s3_outputs.py (a real S3 server)
