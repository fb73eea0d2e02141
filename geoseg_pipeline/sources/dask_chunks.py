"""Reading a dask array region by region through its chunks, each computed once while it is
cached.

The engine reads an item task region by task region: a block plus a window's margin, so
neighbouring regions overlap and share chunks. ``array[region].compute()`` computes every chunk
under the region again for each region (a Zarr chunk decoded, a CF mask applied, a graph of
operations run): with 512-pixel blocks and chunks about four times per chunk. A
:class:`ChunkCache` computes the chunks a region lacks (one ``dask.compute`` for all of them, under
the caller's dask configuration), keeps them, least recently used first out, up to a byte
budget, and assembles regions from them. The cache is shared by the reading threads of one array.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

#: The most bytes of computed chunks one array keeps (for a 512-pixel block row of a
#: 10980-pixel-wide four-band float64 scene: 176 MiB).
CACHE_BYTES = 192 * 2**20


class ChunkCache:
    """Computed chunks of one dask array ``(..., y, x)``, every leading band in each chunk."""

    def __init__(self, array: Any, max_bytes: int = CACHE_BYTES) -> None:
        self.array = array
        self.max_bytes = max_bytes
        self._ys, self._xs = (np.cumsum((0, *c)) for c in array.chunks[-2:])
        self._lead = (slice(None),) * (array.ndim - 2)
        self._blocks: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def cacheable(self) -> bool:
        """Whether a chunk (every band) fits a quarter of the budget; larger ones are not kept."""
        bands = int(np.prod(self.array.shape[:-2], dtype=np.int64))
        chunk = int(np.diff(self._ys).max()) * int(np.diff(self._xs).max()) * bands * self.array.dtype.itemsize
        return bool(chunk * 4 <= self.max_bytes)

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        """Every band of ``array[..., rows, cols]`` (steps of 1, inside the array)."""
        ys, xs = self._ys, self._xs
        i0, i1 = int(np.searchsorted(ys, rows.start, "right")) - 1, int(np.searchsorted(ys, rows.stop, "left"))
        j0, j1 = int(np.searchsorted(xs, cols.start, "right")) - 1, int(np.searchsorted(xs, cols.stop, "left"))
        keys = [(i, j) for i in range(i0, i1) for j in range(j0, j1)]
        with self._lock:
            found = {k: self._blocks[k] for k in keys if k in self._blocks}
            for k in found:
                self._blocks.move_to_end(k)
        missing = [k for k in keys if k not in found]
        if missing:
            from dask.base import compute

            computed = compute(  # type: ignore[no-untyped-call]
                *(self.array.blocks[(*self._lead, i, j)] for i, j in missing))
            found.update((k, np.asarray(b)) for k, b in zip(missing, computed, strict=True))
            self._keep({k: found[k] for k in missing})
        out = np.empty((*self.array.shape[:-2], rows.stop - rows.start, cols.stop - cols.start), self.array.dtype)
        for (i, j), block in found.items():
            y0, y1 = max(int(ys[i]), rows.start), min(int(ys[i + 1]), rows.stop)
            x0, x1 = max(int(xs[j]), cols.start), min(int(xs[j + 1]), cols.stop)
            out[..., y0 - rows.start:y1 - rows.start, x0 - cols.start:x1 - cols.start] = \
                block[..., y0 - ys[i]:y1 - ys[i], x0 - xs[j]:x1 - xs[j]]
        return out

    def _keep(self, blocks: dict[tuple[int, int], np.ndarray]) -> None:
        with self._lock:
            for key, block in blocks.items():
                if key not in self._blocks:
                    self._blocks[key] = block
                    self._bytes += block.nbytes
            while self._bytes > self.max_bytes and self._blocks:
                self._bytes -= self._blocks.popitem(last=False)[1].nbytes


__all__ = ["CACHE_BYTES", "ChunkCache"]
