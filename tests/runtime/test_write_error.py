"""A failed write during a job names the item's folder, and says so when the disk is full (the
journal's and the report's writes raise bare OSErrors, without the path)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from geoseg_pipeline.errors import SinkError
from geoseg_pipeline.runtime.item_run import write_error


def test_a_full_disk_is_named_with_the_folder(tmp_path: Path) -> None:
    exc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    err = write_error(tmp_path / "item", "cannot write block (0, 1)", exc)
    assert isinstance(err, SinkError) and isinstance(err, OSError)
    text = str(err)
    assert text.startswith(f"{tmp_path / 'item'}: cannot write block (0, 1): ") and "no space left on device" in text


def test_another_failure_is_named_without_a_disk_note_when_there_is_room(tmp_path: Path) -> None:
    exc = OSError(errno.EACCES, os.strerror(errno.EACCES))
    text = str(write_error(tmp_path, "cannot finish the outputs", exc))
    assert str(tmp_path) in text and "Permission denied" in text and "no space" not in text
