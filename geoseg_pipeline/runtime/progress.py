"""Progress for long jobs: tqdm bars on a terminal, plain log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import Protocol

log = logging.getLogger("geoseg")


class Progress(Protocol):
    """What the driver reports while it runs."""

    def add_windows(self, count: int) -> None: ...

    def windows_done(self, count: int) -> None: ...

    def windows_undone(self, count: int) -> None: ...

    def item_done(self, name: str, status: str) -> None: ...

    def close(self) -> None: ...


class BarProgress:
    """Two tqdm bars: items and windows."""

    def __init__(self, items: int) -> None:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        # log lines go above the bars instead of through them
        self._redirect = logging_redirect_tqdm()
        self._redirect.__enter__()
        self._items = tqdm(total=items, desc="items", unit="item", position=0, dynamic_ncols=True)
        self._windows = tqdm(total=0, desc="windows", unit="win", position=1, dynamic_ncols=True)

    def add_windows(self, count: int) -> None:
        self._windows.total = (self._windows.total or 0) + count
        self._windows.refresh()

    def windows_done(self, count: int) -> None:
        self._windows.update(count)

    def windows_undone(self, count: int) -> None:
        """Windows counted done whose results were lost with their worker: they run again."""
        self._windows.update(-count)

    def item_done(self, name: str, status: str) -> None:
        self._items.set_postfix_str(f"{name}: {status}", refresh=False)
        self._items.update(1)

    def close(self) -> None:
        self._windows.close()
        self._items.close()
        self._redirect.__exit__(None, None, None)


def format_eta(seconds: float | None) -> str:
    """``1 h 02 min``, ``3 min 20 s``, ``45 s``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


class LogProgress:
    """A log line per finished item and at most one window line every ``every`` seconds, each
    with the job's estimated time to completion.

    The ETA is the remaining windows over the rate so far; items not opened yet are counted at
    the mean window count of the items opened so far (items open one after another).
    """

    def __init__(self, items: int, every: float = 10.0) -> None:
        self.items, self.every = items, every
        self.done_items = 0
        self.opened = 0
        self.total = self.done = 0
        self._last = time.monotonic()
        self._start = self._last

    def add_windows(self, count: int) -> None:
        self.total += count
        self.opened += 1

    def eta(self) -> float | None:
        """Seconds to the end of the job, or ``None`` before the first windows are done."""
        elapsed = time.monotonic() - self._start
        if self.done == 0 or elapsed <= 0:
            return None
        rate = self.done / elapsed
        unopened = max(self.items - self.opened, 0) * (self.total / self.opened if self.opened else 0.0)
        return max(self.total - self.done + unopened, 0.0) / rate

    def windows_done(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            rate = self.done / max(now - self._start, 1e-9)
            log.info("windows %d/%d (%.1f/s), items %d/%d, ETA %s", self.done, self.total, rate,
                     self.done_items, self.items, format_eta(self.eta()))

    def windows_undone(self, count: int) -> None:
        """Windows counted done whose results were lost with their worker: they run again."""
        self.done -= count

    def item_done(self, name: str, status: str) -> None:
        self.done_items += 1
        left = self.items - self.done_items
        eta = f", ETA {format_eta(self.eta())}" if left else ""
        log.info("item %d/%d %s: %s%s", self.done_items, self.items, name, status, eta)

    def close(self) -> None:
        log.info("windows %d/%d, items %d/%d", self.done, self.total, self.done_items, self.items)


def make_progress(items: int, bars: bool | None = None) -> Progress:
    """Bars when stderr is a terminal (or ``bars`` is true), log lines otherwise."""
    use_bars = sys.stderr.isatty() if bars is None else bars
    return BarProgress(items) if use_bars else LogProgress(items)
