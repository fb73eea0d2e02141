"""Counting the chunks of a dask array each computation reads (the dask tests' probe)."""

from __future__ import annotations

import threading
from typing import Any

from dask.callbacks import Callback


class ChunksPerCompute(Callback):  # type: ignore[misc]
    """How many chunks each computation of dask's local scheduler runs, however the engine asks
    for it (``dask.compute`` or the scheduler on a graph of its own): used as a context manager,
    this callback opens a count each time the scheduler starts a computation, in the thread that
    runs it (the engine computes chunks synchronously in its reading threads); the test's chunk
    function calls :meth:`ran`, which counts into the computation of its thread."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.lock = threading.Lock()
        self.counts: list[int] = []
        self.local = threading.local()

    def _start_state(self, dsk: Any, state: Any) -> None:
        with self.lock:
            self.counts.append(0)
            self.local.index = len(self.counts) - 1

    def ran(self) -> None:
        """Count one chunk into the computation running in this thread."""
        with self.lock:
            self.counts[self.local.index] += 1
