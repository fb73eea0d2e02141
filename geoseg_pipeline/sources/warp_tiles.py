"""Warped tiles of an asset shared by the reading threads of a process.

A STAC asset on another grid is read through a GDAL warped VRT, one per reading thread (a GDAL
handle is not shared between threads). Task regions overlap by a window's margin, and
neighbouring regions are read by different threads, so without sharing the warper computes the
overlap again (a 10980² Sentinel-2-like item asked it for 1.27 times each 20 m band's pixels;
GDAL's block cache is per handle and did not absorb it). :class:`SharedWarp` reads through tiles
of the output grid, each warped once by whichever thread needs it first, with that thread's own
VRT, and kept for the others (least recently used out, :data:`CACHE_BYTES` per asset band).

A warped VRT gives a pixel the same value whatever window it is read in (the tests compare every
window with warping the whole band), so the tiles change no value.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import numpy as np
from rasterio.windows import Window as RioWindow

#: Tile size (rows, columns) on the output grid: short tiles keep the rows that the next block
#: row's regions share with this one's without holding much more.
TILE = (256, 512)

#: The most bytes of warped tiles one asset band keeps.
CACHE_BYTES = 64 * 2**20


class _Tiles:
    """The warped tiles of one asset band on one output grid."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.blocks: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self.pending: dict[tuple[int, int], threading.Event] = {}
        self.bytes = 0
        self.users = 0
        self.lock = threading.Lock()

    def window(self, key: tuple[int, int]) -> RioWindow:
        r0, c0 = key[0] * TILE[0], key[1] * TILE[1]
        return RioWindow(c0, r0, min(TILE[1], self.width - c0), min(TILE[0], self.height - r0))

    def read(self, vrt: Any, band: int, window: RioWindow) -> np.ndarray:
        r0, c0 = int(window.row_off), int(window.col_off)
        h, w = int(window.height), int(window.width)
        keys = [(i, j) for i in range(r0 // TILE[0], (r0 + h - 1) // TILE[0] + 1)
                for j in range(c0 // TILE[1], (c0 + w - 1) // TILE[1] + 1)]
        found: dict[tuple[int, int], np.ndarray] = {}
        while missing := [k for k in keys if k not in found]:
            with self.lock:
                for k in missing:
                    if k in self.blocks:
                        found[k] = self.blocks[k]
                        self.blocks.move_to_end(k)
                missing = [k for k in missing if k not in found]
                mine = [k for k in missing if k not in self.pending]
                theirs = [self.pending[k] for k in missing if k in self.pending]
                done = threading.Event()
                self.pending.update((k, done) for k in mine)
            try:
                for k in mine:
                    found[k] = np.asarray(vrt.read(band, window=self.window(k)))
                    self._keep(k, found[k])
            finally:
                with self.lock:
                    for k in mine:
                        self.pending.pop(k, None)
                done.set()
            for event in theirs:
                event.wait()
            with self.lock:  # theirs are kept now, unless their read failed or was evicted
                for k in missing:
                    if k not in found and k in self.blocks:
                        found[k] = self.blocks[k]
        first = next(iter(found.values()))
        out = np.empty((h, w), first.dtype)
        for (i, j), tile in found.items():
            tr, tc = i * TILE[0], j * TILE[1]
            lo_r, hi_r = max(tr, r0), min(tr + tile.shape[0], r0 + h)
            lo_c, hi_c = max(tc, c0), min(tc + tile.shape[1], c0 + w)
            out[lo_r - r0:hi_r - r0, lo_c - c0:hi_c - c0] = tile[lo_r - tr:hi_r - tr, lo_c - tc:hi_c - tc]
        return out

    def _keep(self, key: tuple[int, int], tile: np.ndarray) -> None:
        with self.lock:
            if key in self.blocks:
                return
            self.blocks[key] = tile
            self.bytes += tile.nbytes
            while self.bytes > CACHE_BYTES and len(self.blocks) > 1:
                _, old = self.blocks.popitem(last=False)
                self.bytes -= old.nbytes


_SHARED: dict[Hashable, _Tiles] = {}
_SHARED_LOCK = threading.Lock()


class SharedWarp:
    """A warped VRT read through the process's shared tiles of ``key`` (an asset band onto an
    output grid, with its resampling and nodata); :meth:`close` lets them go when no reader of
    the process uses them any more.

    Args:
        vrt: this thread's warped VRT onto the output grid.
        key: what identifies the warp (equal keys give equal pixels).
    """

    def __init__(self, vrt: Any, key: Hashable) -> None:
        self.vrt, self.key = vrt, key
        with _SHARED_LOCK:
            tiles = _SHARED.get(key)
            if tiles is None:
                tiles = _SHARED[key] = _Tiles(int(vrt.height), int(vrt.width))
            tiles.users += 1
        self._tiles: _Tiles | None = tiles

    def read(self, band: int, window: RioWindow) -> np.ndarray:
        """``window`` (inside the grid) of the warped ``band``."""
        if self._tiles is None:
            raise ValueError("read after close")
        return self._tiles.read(self.vrt, band, window)

    def close(self) -> None:
        """Stop using the shared tiles (dropped with their last user); may be called again."""
        with _SHARED_LOCK:
            tiles, self._tiles = self._tiles, None
            if tiles is not None:
                tiles.users -= 1
                if tiles.users == 0 and _SHARED.get(self.key) is tiles:
                    del _SHARED[self.key]


__all__ = ["CACHE_BYTES", "TILE", "SharedWarp"]
