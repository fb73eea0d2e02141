"""Log-line progress: rates, per-item lines and the job's ETA."""

from __future__ import annotations

import logging

import pytest

from geoseg_pipeline.runtime import progress
from geoseg_pipeline.runtime.progress import LogProgress, format_eta


def test_format_eta() -> None:
    assert [format_eta(x) for x in (None, 4.4, 200, 3725)] == ["?", "4 s", "3 min 20 s", "1 h 02 min"]


def test_eta_counts_unopened_items_at_the_mean_size(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    p = LogProgress(items=4, every=5.0)
    assert p.eta() is None
    p.add_windows(100)  # item 1 opened: 100 windows
    clock[0] += 10
    with caplog.at_level(logging.INFO, logger="geoseg"):
        p.windows_done(50)  # 5 windows/s
        # 50 left of item 1, and 3 unopened items of 100 each: 350 windows at 5/s
        assert p.eta() == pytest.approx(70.0)
        p.windows_done(50)
        p.item_done("a", "ok")
    assert "windows 50/100 (5.0/s), items 0/4, ETA 1 min 10 s" in caplog.text
    assert "item 1/4 a: ok, ETA" in caplog.text
