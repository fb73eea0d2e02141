"""Counting the chunks of a dask array each computation reads (the dask tests' probe)."""

from __future__ import annotations

import threading
from typing import Any

from dask.array.optimization import optimize
from dask.core import flatten


class ChunksPerCompute:
    """How many chunks of the dask array called ``name`` each computation needs: dask's array
    optimisation hook (``array_optimize``) sees every computation's graph and output keys, in
    any thread; the graph culled to those keys holds the source chunks it reads."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.counts: list[int] = []

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        culled = dict(dsk.cull(set(flatten(keys))))
        with self.lock:
            self.counts.append(sum(1 for k in culled if isinstance(k, tuple) and k[0] == self.name))
        return optimize(dsk, keys, **kwargs)
