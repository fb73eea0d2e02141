"""The block journal: blocks committed whole, read back as the stitcher handed them over."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geoseg_pipeline.geometry import Window
from geoseg_pipeline.stitching import BlockJournal, FinishedBlock, journal_key


def _block(index: tuple[int, int], nodata: int, hole: bool = False, logits: bool = False) -> FinishedBlock:
    rng = np.random.default_rng(sum(index))
    labels = rng.integers(0, 4, (16, 12)).astype("uint8")
    valid = np.ones(labels.shape, bool)
    labels[:3] = nodata
    valid[:3] = False
    if hole:  # a pixel with no prediction whose label is not the nodata label (volumes: none)
        valid[5, 5] = False
    lg = rng.normal(size=(4, 16, 12)).astype("float32") if logits else None
    return FinishedBlock(Window((index[0] * 16, index[1] * 12), (16, 12)), labels, valid, lg, index=index)


def test_blocks_round_trip(tmp_path: Path) -> None:
    j = BlockJournal(tmp_path, journal_key("a", 1), nodata_label=255)
    blocks = [_block((0, 0), 255), _block((0, 1), 255, hole=True), _block((1, 0), 255, logits=True)]
    for b in blocks:
        j.save(b)
    assert j.committed() == {(0, 0), (0, 1), (1, 0)}
    for b in blocks:
        got = j.load(b.index, b.window)
        assert np.array_equal(got.labels, b.labels) and np.array_equal(got.valid, b.valid)
        assert (got.logits is None) == (b.logits is None)
        if b.logits is not None:
            assert np.array_equal(got.logits, b.logits)
    with pytest.raises(OSError, match="expected"):
        j.load((0, 0), Window((0, 0), (8, 8)))


def test_another_key_or_force_drops_old_blocks_and_cut_saves(tmp_path: Path) -> None:
    j = BlockJournal(tmp_path, journal_key("input-v1"), 255)
    j.save(_block((0, 0), 255))
    (j.folder / ".abc.tmp").write_bytes(b"half")  # a save cut short by a kill
    again = BlockJournal(tmp_path, journal_key("input-v1"), 255)
    assert again.committed() == {(0, 0)} and not list(again.folder.glob(".*"))
    assert BlockJournal(tmp_path, journal_key("input-v1"), 255, fresh=True).committed() == set()
    j.save(_block((0, 0), 255))
    other = BlockJournal(tmp_path, journal_key("input-v2"), 255)
    assert other.committed() == set() and [p.name for p in tmp_path.iterdir()] == [other.folder.name]


def test_release_keeps_committed_blocks_but_no_empty_folder(tmp_path: Path) -> None:
    empty = BlockJournal(tmp_path / "a", "k", 255)
    empty.release()
    assert not empty.folder.exists()
    kept = BlockJournal(tmp_path / "b", "k", 255)
    kept.save(_block((0, 0), 255))
    kept.release()
    assert kept.committed() == {(0, 0)}
    kept.clear()
    assert not kept.folder.exists()
