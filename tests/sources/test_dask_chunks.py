"""``ChunkCache`` on the kinds of dask arrays users hand to ``predict_dataarray``: its regions
equal the array's, whatever the graph under the chunks (the cache runs the array's own graph,
built once, for the chunks a region needs)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask
import dask.array as dka
import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr
from rasterio.transform import from_origin

from geoseg_pipeline.sources import dask_chunks
from geoseg_pipeline.sources.dask_chunks import ChunkCache

BASE = np.random.default_rng(0).integers(0, 1000, (3, 300, 350)).astype("uint16")


def _geotiff(folder: Path) -> Any:
    path = folder / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=350, height=300, count=3, dtype="uint16", tiled=True,
                       blockxsize=64, blockysize=64, transform=from_origin(500000, 4600000, 10, 10),
                       crs="EPSG:32633") as ds:
        ds.write(BASE)
    return rioxarray.open_rasterio(path, chunks={"band": 1, "x": 128, "y": 128}, lock=False).data


ARRAYS: dict[str, Callable[[Path], Any]] = {
    "from_array": lambda _: dka.from_array(BASE, chunks=(1, 64, 80)),
    "persisted": lambda _: dka.from_array(BASE, chunks=(3, 64, 80)).persist(),
    # a window of a larger array: the chunks are slices of the source's chunks
    "sliced": lambda _: dka.from_array(np.pad(BASE, ((0, 0), (7, 3), (5, 9))), chunks=(1, 50, 50))[:, 7:307, 5:355],
    "concatenated": lambda _: dka.concatenate([dka.from_array(BASE[:1], chunks=(1, 64, 64)),
                                               dka.from_array(BASE[1:], chunks=(2, 100, 70))], axis=0),
    # CF-style decoding, as xarray's open_zarr builds it
    "decoded": lambda _: dka.where(dka.from_array(BASE, chunks=(1, 64, 80)) == 0, np.nan,
                                   dka.from_array(BASE, chunks=(1, 64, 80)).astype("float64") * 0.5),
    "stacked_variables": lambda _: xr.concat([xr.DataArray(dka.from_array(BASE[i], chunks=(90, 100)), dims=("y", "x"))
                                              for i in range(3)], dim="band").data,
    "geotiff": _geotiff,
}


@pytest.mark.parametrize("way", ["graph", "per-region", "threads"])
@pytest.mark.parametrize("kind", sorted(ARRAYS))
def test_regions_equal_the_array(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, way: str) -> None:
    """The cache's own graph; ``dask.compute`` per region for an array of too many chunks to
    build its graph; ``dask.compute`` under a scheduler the caller chose."""
    scheduler = "threads" if way == "threads" else None
    if way == "per-region":
        monkeypatch.setattr(dask_chunks, "GRAPH_CHUNKS", 1)
    array = ARRAYS[kind](tmp_path)
    expected = np.asarray(array.compute())
    cache = ChunkCache(array, max_bytes=256 * 1024)  # a few chunks: evictions and recomputations too
    rng = np.random.default_rng(1)
    with dask.config.set(scheduler=scheduler):
        for _ in range(25):
            r0, c0 = int(rng.integers(0, 299)), int(rng.integers(0, 349))
            rows, cols = slice(r0, int(rng.integers(r0 + 1, 301))), slice(c0, int(rng.integers(c0 + 1, 351)))
            got = cache.read(rows, cols)
            assert got.dtype == expected.dtype
            np.testing.assert_array_equal(got, expected[:, rows, cols])


@pytest.mark.parametrize("scheduler", [None, "threads"])
def test_an_array_of_spatial_axes_only(scheduler: str | None) -> None:
    """A ``(z, y, x)`` volume of one channel: no leading axis to assemble."""
    data = np.arange(20 * 30 * 40, dtype=np.float32).reshape(20, 30, 40)
    cache = ChunkCache(dka.from_array(data, chunks=(7, 11, 13)), spatial=3)
    with dask.config.set(scheduler=scheduler):
        for region in [(slice(0, 20), slice(0, 30), slice(0, 40)), (slice(5, 9), slice(10, 12), slice(12, 27))]:
            np.testing.assert_array_equal(cache.read(*region), data[region])


@pytest.mark.parametrize("graph_chunks", [dask_chunks.GRAPH_CHUNKS, 1])
def test_chunks_are_computed_in_the_reading_thread(monkeypatch: pytest.MonkeyPatch, graph_chunks: int) -> None:
    """Under dask's default scheduler, by the cache's own graph or region by region alike: the
    engine's reading threads are the parallelism, a thread pool under each only adds overhead."""
    import threading

    monkeypatch.setattr(dask_chunks, "GRAPH_CHUNKS", graph_chunks)
    where: list[int] = []

    def chunk(block_info: Any = None) -> np.ndarray:
        where.append(threading.get_ident())
        return np.ones((2, 10, 10), np.uint8)

    lazy = dka.map_blocks(chunk, chunks=((2,), (10, 10), (10, 10)), dtype=np.uint8, meta=np.empty((0, 0, 0), np.uint8))
    ChunkCache(lazy).read(slice(0, 20), slice(0, 20))
    assert len(where) == 4 and set(where) == {threading.get_ident()}


def test_a_chunk_another_thread_cached_meanwhile_is_not_computed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reading thread looks at the cache without the lock; another may cache the chunk before
    this one takes the lock (and no longer marks it pending): it is taken from the cache, not
    computed a second time (a volume job computed a layer of 9 chunks twice, now and then)."""
    array = dka.from_array(np.arange(40 * 40).reshape(40, 40), chunks=10)
    cache = ChunkCache(array)
    np.testing.assert_array_equal(cache.read(slice(0, 10), slice(0, 10)), np.asarray(array[:10, :10]))
    computed: list[list[tuple[int, ...]]] = []
    original = cache._compute
    monkeypatch.setattr(cache, "_compute", lambda keys: computed.append(keys) or original(keys))
    monkeypatch.setattr(cache, "_found", lambda keys: {})  # the view from before the other thread cached it
    np.testing.assert_array_equal(cache.read(slice(0, 10), slice(0, 10)), np.asarray(array[:10, :10]))
    assert computed == []


@pytest.mark.parametrize(("scheduler", "graph_chunks"), [(None, dask_chunks.GRAPH_CHUNKS), (None, 1), ("threads", 1),
                                                        ("executor", 1)])
def test_computations_at_once_keep_the_callers_dask_callbacks(monkeypatch: pytest.MonkeyPatch, graph_chunks: int,
                                                              scheduler: str | None) -> None:
    """Two reading threads computing at once each start with the caller's callbacks (a progress
    bar sees both), and the callbacks are still registered afterwards: dask's local scheduler,
    left to find them itself, empties the global set while it computes, so the second thread
    started without them and the later end put back an empty set (CI saw the test's own counter
    lose its place)."""
    import threading

    from dask.callbacks import Callback

    monkeypatch.setattr(dask_chunks, "GRAPH_CHUNKS", graph_chunks)
    both = threading.Barrier(2, timeout=20)  # each chunk waits until the other computation runs too

    def chunk(block_info: Any = None) -> np.ndarray:
        both.wait()
        return np.ones((1, 10, 10), np.uint8)

    lazy = dka.map_blocks(chunk, chunks=((1,), (10, 10), (10,)), dtype=np.uint8, meta=np.empty((0, 0, 0), np.uint8))
    cache = ChunkCache(lazy)
    started: list[int] = []
    failed: list[BaseException] = []

    def read(top: int) -> None:
        try:
            cache.read(slice(top, top + 10), slice(0, 10))
        except BaseException as exc:  # asserted in the test's thread below
            failed.append(exc)

    counter = Callback(start_state=lambda dsk, state: started.append(threading.get_ident()))
    executor = ThreadPoolExecutor(2) if scheduler == "executor" else None  # dask's get_async on it
    with dask.config.set(scheduler=executor or scheduler), counter:
        threads = [threading.Thread(target=read, args=(top,)) for top in (0, 10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert counter._callback in Callback.active
    if executor is not None:
        executor.shutdown()
    assert not failed, failed
    assert sorted(started) == sorted(t.ident for t in threads)
    assert counter._callback not in Callback.active


@pytest.mark.parametrize("graph_chunks", [dask_chunks.GRAPH_CHUNKS, 1])
def test_a_cache_given_the_callers_callbacks_uses_those(monkeypatch: pytest.MonkeyPatch, graph_chunks: int) -> None:
    """``live_dataarray`` gives the cache the callbacks registered when the call starts: they
    fire for each computation, whatever the global set holds meanwhile."""
    from dask.callbacks import Callback, local_callbacks

    monkeypatch.setattr(dask_chunks, "GRAPH_CHUNKS", graph_chunks)
    started: list[int] = []
    counter = Callback(start_state=lambda dsk, state: started.append(1))
    array = dka.from_array(np.arange(40 * 40).reshape(40, 40), chunks=10)
    cache = ChunkCache(array, callbacks=[counter._callback])
    with local_callbacks():  # the global set empty: only the callbacks given can fire
        np.testing.assert_array_equal(cache.read(slice(5, 25), slice(0, 10)), np.asarray(array[5:25, :10]))
    assert started == [1]
