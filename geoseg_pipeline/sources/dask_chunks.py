"""Reading a dask array region by region through its chunks, each computed once while it is
cached.

The engine reads an item task region by task region: a block plus a window's margin, so
neighbouring regions overlap and share chunks. ``array[region].compute()`` computes every chunk
under the region again for each region (a Zarr chunk decoded, a CF mask applied, a graph of
operations run): with 512-pixel blocks and chunks about four times per chunk. A
:class:`ChunkCache` computes the chunks a region lacks, keeps them, least recently used first out,
up to a byte budget, and assembles regions from them. The cache is shared by the reading threads
of one array; a chunk one thread is computing is waited for by the others, not computed again.
Under dask's default scheduler the chunks are computed in the reading thread itself, from the
array's graph built once (see :meth:`ChunkCache._compute`); under a scheduler the caller chose
(a ``dask.config`` setting, a distributed client) with one ``dask.compute`` per region.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

#: The most bytes of computed chunks one array keeps (for a 512-pixel block row of a
#: 10980-pixel-wide four-band float64 scene: 176 MiB).
CACHE_BYTES = 192 * 2**20

#: Arrays of at most this many chunks have their graph built once (see
#: :meth:`ChunkCache._compute`); building it costs about 0.2 ms a task, so larger arrays are
#: computed region by region instead.
GRAPH_CHUNKS = 20_000

#: Where a computed block lies among the leading (band, channel) axes, and the block.
Piece = tuple[tuple[slice, ...], np.ndarray]


class ChunkCache:
    """Computed chunks of one dask array ``(..., y, x)`` (``spatial=2``) or ``(..., z, y, x)``
    (``spatial=3``), every leading band or channel in each chunk."""

    def __init__(self, array: Any, max_bytes: int = CACHE_BYTES, spatial: int = 2,
                 callbacks: Sequence[Any] | None = None) -> None:
        self.array = array
        #: The caller's dask callbacks, given to each computation (``None``: those registered
        #: when it runs; see :func:`registered_callbacks`).
        self.callbacks = None if callbacks is None else list(callbacks)
        self.max_bytes = max_bytes
        self.spatial = spatial
        self._edges = [np.cumsum((0, *c)) for c in array.chunks[-spatial:]]
        self._lead = (slice(None),) * (array.ndim - spatial)
        lead_edges = [np.cumsum((0, *c)) for c in array.chunks[:-spatial]]
        #: Each leading block's index and where it lies (all of them make up a cached chunk).
        self._lead_blocks = [(idx, tuple(slice(int(e[i]), int(e[i + 1])) for e, i in zip(lead_edges, idx, strict=True)))
                             for idx in itertools.product(*(range(len(e) - 1) for e in lead_edges))]
        self._blocks: OrderedDict[tuple[int, ...], list[Piece]] = OrderedDict()
        self._bytes = 0
        self._pending: dict[tuple[int, ...], threading.Event] = {}
        self._lock = threading.Lock()
        self._graph: dict[Any, Any] | None = None
        self._graph_once = int(np.prod(array.numblocks, dtype=np.int64)) <= GRAPH_CHUNKS

    def cacheable(self) -> bool:
        """Whether a chunk (every band) fits a quarter of the budget; larger ones are not kept."""
        bands = int(np.prod(self.array.shape[:-self.spatial], dtype=np.int64))
        chunk = bands * self.array.dtype.itemsize
        for edges in self._edges:
            chunk *= int(np.diff(edges).max())
        return bool(chunk * 4 <= self.max_bytes)

    def read(self, *region: slice) -> np.ndarray:
        """Every band of ``array[..., *region]``: one slice per spatial axis (steps of 1, inside
        the array)."""
        spans = [range(int(np.searchsorted(e, s.start, "right")) - 1, int(np.searchsorted(e, s.stop, "left")))
                 for e, s in zip(self._edges, region, strict=True)]
        keys = list(itertools.product(*spans))
        found = self._found(keys)
        while missing := [k for k in keys if k not in found]:
            with self._lock:  # what another thread computes now is waited for, not computed twice
                # what another thread cached since this one looked (outside the lock) is taken,
                # not computed again
                for k in missing:
                    if k in self._blocks:
                        found[k] = self._blocks[k]
                        self._blocks.move_to_end(k)
                missing = [k for k in missing if k not in found]
                mine = [k for k in missing if k not in self._pending]
                theirs = [self._pending[k] for k in missing if k in self._pending]
                done = threading.Event()
                self._pending.update((k, done) for k in mine)
            try:
                if mine:
                    computed = self._compute(mine)
                    found.update(computed)
                    self._keep(computed)
            finally:
                with self._lock:
                    for k in mine:
                        self._pending.pop(k, None)
                done.set()
            for event in theirs:
                event.wait()
            # theirs are cached now, unless their computation failed or the budget evicted them:
            # then this thread computes them on the next turn
            found.update(self._found([k for k in missing if k not in found]))
        out = np.empty((*self.array.shape[:-self.spatial], *(s.stop - s.start for s in region)), self.array.dtype)
        for key, pieces in found.items():
            dst: list[slice] = []
            src: list[slice] = []
            for e, s, i in zip(self._edges, region, key, strict=True):
                lo, hi = max(int(e[i]), s.start), min(int(e[i + 1]), s.stop)
                dst.append(slice(lo - s.start, hi - s.start))
                src.append(slice(lo - int(e[i]), hi - int(e[i])))
            for lead, block in pieces:
                out[(*lead, *dst)] = block[(*self._lead, *src)]
        return out

    def _compute(self, keys: list[tuple[int, ...]]) -> dict[tuple[int, ...], list[Piece]]:
        """The chunks ``keys`` (spatial block indices), each as its leading blocks' pieces.

        Under dask's default scheduler the array's low-level graph is built and optimized once
        (at the first call) and each call runs only the tasks its chunks need, synchronously:
        a ``compute`` of ``array.blocks[...]`` builds, culls and optimizes a new graph every
        time, which cost more than decoding the Zarr chunks themselves (and stacks the bands
        into a new array that the region's assembly copies again). Arrays of more than
        :data:`GRAPH_CHUNKS` chunks are computed region by region, as under another scheduler."""
        default = self._default_scheduler()
        if not (default and self._graph_once):
            from dask.base import compute

            how: dict[str, Any] = {"scheduler": "sync"} if default else {}
            if default or _local_scheduler(self.array):
                how["callbacks"] = self._callbacks()
            computed = compute(  # type: ignore[no-untyped-call]
                *(self.array.blocks[(*self._lead, *k)] for k in keys), **how)
            return {k: [(self._lead, np.asarray(b))] for k, b in zip(keys, computed, strict=True)}
        from dask.local import get_sync
        from dask.optimization import cull

        graph = self._low_level_graph()
        names = [(self.array.name, *lead, *k) for k in keys for lead, _ in self._lead_blocks]
        values = iter(get_sync(cull(graph, names)[0], names, callbacks=self._callbacks()))  # type: ignore[no-untyped-call]
        return {k: [(where, np.asarray(next(values))) for _, where in self._lead_blocks] for k in keys}

    def _callbacks(self) -> list[Any]:
        return list(self.callbacks) if self.callbacks is not None else registered_callbacks()

    def _low_level_graph(self) -> dict[Any, Any]:
        with self._lock:
            if self._graph is None:
                array = self.array
                self._graph = dict(array.__dask_optimize__(array.__dask_graph__(), array.__dask_keys__()))
            return self._graph

    def _default_scheduler(self) -> bool:
        """Whether the caller left dask's default threaded scheduler: the chunks are then
        computed in the reading thread itself, as the engine's reading threads already run in
        parallel and a thread pool under each only adds its overhead (about 10 % of a 10980²
        job). A scheduler the caller chose (a ``dask.config`` setting, a distributed client) is
        used through ``dask.compute``."""
        import dask
        import dask.threaded
        from dask.base import get_scheduler

        return dask.config.get("scheduler", None) is None \
            and get_scheduler(collections=[self.array]) is dask.threaded.get  # type: ignore[no-untyped-call]

    def _found(self, keys: list[tuple[int, ...]]) -> dict[tuple[int, ...], list[Piece]]:
        """The cached chunks among ``keys``, marked as used last."""
        with self._lock:
            found = {k: self._blocks[k] for k in keys if k in self._blocks}
            for k in found:
                self._blocks.move_to_end(k)
        return found

    def _keep(self, blocks: dict[tuple[int, ...], list[Piece]]) -> None:
        with self._lock:
            for key, pieces in blocks.items():
                if key not in self._blocks:
                    self._blocks[key] = pieces
                    self._bytes += sum(b.nbytes for _, b in pieces)
            while self._bytes > self.max_bytes and self._blocks:
                self._bytes -= sum(b.nbytes for _, b in self._blocks.popitem(last=False)[1])



def registered_callbacks() -> list[Any]:
    """The dask callbacks registered now (a ``ProgressBar``, a ``Callback``), to hand to each
    computation explicitly. Left to find them itself, dask's local scheduler empties the global
    set for the length of a computation and puts back what it found at the end: computations
    running at once in the engine's reading threads then start without the callbacks, and the
    last to end puts back an empty set, losing them for good."""
    from dask.callbacks import Callback

    return list(Callback.active)


def compute_array(array: Any, callbacks: Sequence[Any]) -> Any:
    """``array`` (a dask array) computed with ``callbacks`` given explicitly (see
    :func:`registered_callbacks`) where the scheduler is one of dask's local ones."""
    from dask.base import compute

    how = {"callbacks": list(callbacks)} if _local_scheduler(array) else {}
    return compute(array, **how)[0]  # type: ignore[no-untyped-call]


def _local_scheduler(array: Any) -> bool:
    """Whether the scheduler the caller chose is one of dask's local ones (threads, processes,
    sync, an executor's), which take ``callbacks``; a distributed client's does not."""
    from dask.base import get_scheduler

    scheduler = get_scheduler(collections=[array])  # type: ignore[no-untyped-call]
    function = getattr(scheduler, "func", scheduler)  # an executor's: functools.partial(get_async, ...)
    return str(getattr(function, "__module__", "")).startswith("dask.")


__all__ = ["CACHE_BYTES", "GRAPH_CHUNKS", "ChunkCache", "compute_array", "registered_callbacks"]
