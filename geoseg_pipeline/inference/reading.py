"""A worker's reading side: its open items (one set per reading thread), their staged copies,
retried window reads, and a task's input made ready for the model, ahead of the model.

A worker reads on threads of its own (:class:`ItemReader`) while its model runs: the next
tasks' reads, decoding and normalization overlap the current batch's forward pass, and on a
GPU the input lands in pinned memory so that the copy to the device does not block.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import GeosegError, SourceError, TransientSourceError
from ..formats import lookup
from ..geometry import Window, full_window, intersection
from ..intensity import nonzero_mean_std
from ..nnunet.case import CaseGeometry
from ..nnunet.reading import PreprocessedArray, write_preprocessed
from ..orientation import OrientedVolume, axis_map
from ..preprocess import to_model_input, valid_mask
from ..resampling import ResampledVolume
from ..sources import RasterSource, SourceOptions, VolumeSource, open_source, stage_item
from ..storage import S3Config, is_transient
from ..storage.retry import TALLY, backoff
from ..tasks import ItemFacts, ItemJob
from ..tiling import TileTask

log = logging.getLogger("geoseg")

#: Seconds before the first retry of a failed read (:meth:`ItemReader.read`); doubled after each.
READ_RETRY_DELAY = 0.5

#: Open items kept per reading thread (least recently used closed first).
OPEN_ITEMS = 4


@dataclass(frozen=True)
class PreparedTask:
    """A task's input, read and normalized: ``x`` is ``(channels, *region)`` float32 (zero
    where the region reaches into MONAI's padding around a small image; in pinned memory for a
    GPU model), ``valid`` the region's valid pixels, ``inside`` the part of the region in the
    image, ``runnable`` the task's windows that hold a valid pixel."""

    task: TileTask
    x: torch.Tensor
    valid: np.ndarray
    inside: Window
    runnable: tuple[Window, ...]


class ItemReader:
    """Opens items with their format's reader and reads task inputs, on ``threads`` threads
    of its own (each with its own open items: a GDAL or nibabel handle is not shared).

    Args:
        s3: the object store configuration of the job (the driver's).
        threads: reading threads.
        env: entered by every reading thread for its life (rasterio's environment: the GDAL
            cache cap and the S3 settings are per thread).
        pin: put task inputs in pinned memory (the model is on a GPU).
    """

    def __init__(self, s3: S3Config | None = None, threads: int = 1,
                 env: Callable[[], AbstractContextManager[Any]] | None = None, pin: bool = False) -> None:
        self.s3 = s3
        self.threads = max(int(threads), 1)
        self.pin = pin
        self._env = env
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[OrderedDict[str, RasterSource | VolumeSource]] = []
        # items this worker staged itself (the driver's copy is not visible here): the folder
        # and the copy in it, made once per item whichever reading thread opens it
        self._staged: dict[str, tuple[Path, str]] = {}
        # items this worker preprocessed for an nnU-Net model: the folder, the array, its geometry
        self._nnunet: dict[str, tuple[Path, str, CaseGeometry]] = {}
        self._prep_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    # -- open items ------------------------------------------------------------------------

    def _sources(self) -> OrderedDict[str, RasterSource | VolumeSource]:
        sources: OrderedDict[str, RasterSource | VolumeSource] | None = getattr(self._local, "sources", None)
        if sources is None:
            sources = self._local.sources = OrderedDict()
            with self._lock:
                self._all.append(sources)
        return sources

    def source(self, job: ItemJob) -> RasterSource | VolumeSource:
        """This thread's open reader of ``job``'s item (opened on first use)."""
        sources = self._sources()
        with self._lock:
            src = sources.get(job.path)
            if src is not None:
                sources.move_to_end(job.path)
                return src
        src = self._open(job)
        with self._lock:
            sources[job.path] = src
            while len(sources) > OPEN_ITEMS:
                sources.popitem(last=False)[1].close()
        return src

    def _open(self, job: ItemJob) -> RasterSource | VolumeSource:
        """Open the item as the model sees it: reoriented and resampled (volumes), or
        preprocessed as nnU-Net does (an nnU-Net model)."""
        if job.nnunet is not None:
            return PreprocessedArray(self.nnunet_case(job)[0])  # type: ignore[return-value]
        src = self.open_raw(job)
        if isinstance(src, RasterSource):
            return src
        amap = axis_map(src.grid.affine, src.grid.shape, job.axcodes)
        out: VolumeSource = src if amap.identity else OrientedVolume(src, amap)  # type: ignore[assignment]
        if job.resample is not None:
            out = ResampledVolume(out, job.resample)  # type: ignore[assignment]
        return out

    def prepare_item(self, job: ItemJob) -> ItemFacts:
        """What an item needs before its bands run, done here rather than in the driver: its
        staged copy (made once; workers on this machine read it too) and, for a z-score, the
        mean and standard deviation of its nonzero voxels (one pass, slab by slab).

        Raises:
            SourceError: the copy cannot be made or the item cannot be read.
            InputDataError: no nonzero voxel, or NaN / infinite voxels (z-score).
        """
        if job.nnunet is not None:
            path, case = self.nnunet_case(job)
            return ItemFacts(path, case=case)
        fmt = lookup(job.format, "volume" if job.kind == "volume" else "raster")
        data_path = self.staged_copy(job) if fmt.staged else None
        if not job.zscore_nonzero:
            return ItemFacts(data_path)
        src = self.open_raw(job)
        try:
            assert isinstance(src, VolumeSource)
            mean, std = nonzero_mean_std(src, [b - 1 for b in job.preprocessing.bands])
        finally:
            src.close()
        return ItemFacts(data_path, mean, std)

    def nnunet_case(self, job: ItemJob) -> tuple[str, CaseGeometry]:
        """The item preprocessed as nnU-Net does (:func:`~..nnunet.preprocess.preprocess_case`),
        saved as a float32 ``.npy``: the one named by the job when this process sees it (made by
        a worker on this machine), else this worker's own, made once per item.

        Raises:
            SourceError, InputDataError: the item cannot be read, or disagrees with the model.
        """
        assert job.nnunet is not None
        if job.case is not None and job.data_path and os.path.exists(job.data_path):
            return job.data_path, job.case
        with self._prep_lock:  # not self._lock: opening the item takes that one
            done = self._nnunet.get(job.path)
            if done is None:
                raw = self.open_raw(replace(job, data_path=None))
                folder = Path(tempfile.mkdtemp(prefix="geoseg-nnunet-"))
                try:
                    assert isinstance(raw, VolumeSource)
                    path = folder / "preprocessed.npy"
                    case = write_preprocessed(raw, job.nnunet, path, job.path)
                except BaseException:
                    shutil.rmtree(folder, ignore_errors=True)
                    raise
                finally:
                    raw.close()
                done = self._nnunet[job.path] = (folder, str(path), case)
        return done[1], done[2]

    def open_raw(self, job: ItemJob) -> RasterSource | VolumeSource:
        """The item opened with its format's reader as stored (volumes not reoriented or
        resampled), reading its staged copy (:meth:`staged_copy`)."""
        fmt = lookup(job.format, "volume" if job.kind == "volume" else "raster")
        options = SourceOptions(s3=self.s3, channel_axis=job.channel_axis, dicomweb=job.dicomweb, stac=job.stac)
        if fmt.staged:
            options = replace(options, data_path=self.staged_copy(job))
        return open_source(fmt, job.path, options)

    def staged_copy(self, job: ItemJob) -> str:
        """The local copy a staged format reads: the one named by the job when this process
        sees it (made by a worker on this machine), else this worker's own, made once per item
        whichever thread asks first (a worker on another node of a cluster).

        Raises:
            SourceError: the copy cannot be made (unreadable, truncated gzip, disk full).
        """
        if job.data_path and os.path.exists(job.data_path):
            return job.data_path
        fmt = lookup(job.format, "volume" if job.kind == "volume" else "raster")
        with self._lock:
            staged = self._staged.get(job.path)
            if staged is None:
                folder = Path(tempfile.mkdtemp(prefix="geoseg-stage-"))
                try:
                    options = SourceOptions(s3=self.s3, channel_axis=job.channel_axis, dicomweb=job.dicomweb)
                    staged = (folder, stage_item(fmt, job.path, folder, options))
                except BaseException:
                    shutil.rmtree(folder, ignore_errors=True)
                    raise
                self._staged[job.path] = staged
            return staged[1]

    def _close_here(self, path: str) -> None:
        """Close ``path`` in this thread only (a failed read reopens it)."""
        with self._lock:
            src = self._sources().pop(path, None)
        if src is not None:
            src.close()

    def release(self, path: str) -> None:
        """Close ``path`` in every thread, and drop its own staged copy (after its item is done)."""
        with self._lock:
            found = [s for sources in self._all if (s := sources.pop(path, None)) is not None]
            staged = self._staged.pop(path, None)
            prepared = self._nnunet.pop(path, None)
        for src in found:
            src.close()
        for folder in (staged[0] if staged else None, prepared[0] if prepared else None):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    @property
    def staged(self) -> list[Path]:
        """The folders of the copies this worker made itself."""
        return [folder for folder, _ in self._staged.values()] + [v[0] for v in self._nnunet.values()]

    def close(self) -> None:
        """Stop the reading threads, close every open item and drop every staged copy."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        with self._lock:
            paths = {p for sources in self._all for p in sources} | set(self._staged) | set(self._nnunet)
        for path in paths:
            self.release(path)

    # -- reading ---------------------------------------------------------------------------

    def read(self, job: ItemJob, window: Window, channels: list[int]) -> np.ndarray:
        """``window`` of ``job``'s item, retried when the failure may pass: a
        :class:`TransientSourceError` (object store 5xx or throttling, a timeout, a dropped
        connection, a network file system hiccup) or a bare ``OSError`` that
        :func:`~geoseg_pipeline.storage.is_transient` says is one. A failed read is retried
        ``job.read_retries`` times, after about :data:`READ_RETRY_DELAY` seconds, then twice as long
        each time (with jitter: :func:`~geoseg_pipeline.storage.retry.backoff`), the item reopened
        each time; each retry is counted for the item. Any other error (a corrupt tile, access denied,
        content that cannot be segmented) is raised at once.

        Raises:
            SourceError: the read failed ``read_retries + 1`` times (the message says how many
                and gives the last error), or failed in a way retrying cannot mend.
        """
        for attempt in range(job.read_retries + 1):
            try:
                return self.source(job).read(window, channels)
            except TransientSourceError as exc:
                error: OSError = exc
            except GeosegError:
                raise
            except OSError as exc:
                if not is_transient(exc):
                    raise SourceError(f"{job.path}: cannot read {window}: {exc}") from exc
                error = exc
            if attempt == job.read_retries:
                raise SourceError(
                    f"{job.path}: reading {window} failed {attempt + 1} time(s) (read_retries={job.read_retries}); "
                    f"last error: {error}"
                ) from error
            delay = backoff(attempt + 1, first=READ_RETRY_DELAY)
            log.warning("%s: read of %s failed (%s); retrying in %.1f s", job.path, window, error, delay)
            TALLY.add("read", job.path)
            time.sleep(delay)
            self._close_here(job.path)
        raise AssertionError("unreachable")

    def prepare(self, job: ItemJob, task: TileTask) -> PreparedTask:
        """Read ``task``'s region and make it the model's input."""
        prep = job.preprocessing
        region = task.region
        shape = job.image_shape or self.source(job).grid.shape
        inside = intersection(region, full_window(shape))
        if inside is None:  # cannot happen for a plan of this grid
            raise ValueError(f"{job.name}: task {task.index} lies outside the image")
        # raster bands are 1-based (GDAL), volume channels 0-based (array axes)
        channels = list(prep.bands) if job.kind == "raster" else [b - 1 for b in prep.bands]
        data = self.read(job, inside, channels)
        valid_in = valid_mask(data, prep.nodata)
        x_in = to_model_input(data, valid_in, prep, job.path)
        # Windows may reach into MONAI's zero padding around a small image.
        x = torch.zeros((len(prep.bands), *region.size), dtype=torch.float32, pin_memory=self.pin)
        valid = np.zeros(region.size, dtype=bool)
        sl = inside.slices(region.start)
        x.numpy()[(slice(None), *sl)] = x_in
        valid[sl] = valid_in
        runnable = tuple(w for w in task.windows if valid[w.slices(region.start)].any())
        return PreparedTask(task, x, valid, inside, runnable)

    def prepared(self, job: ItemJob, tasks: Iterable[TileTask]) -> Iterator[PreparedTask]:
        """``tasks`` prepared in order, read on the reading threads up to ``threads + 1`` tasks
        ahead of the caller."""
        pool = self._threads()
        ahead: deque[Future[PreparedTask]] = deque()
        try:
            for task in tasks:
                ahead.append(pool.submit(self.prepare, job, task))
                if len(ahead) > self.threads:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:
            for fut in ahead:
                fut.cancel()
            for fut in ahead:  # none still reading once the caller moves on
                if not fut.cancelled():
                    fut.exception()

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="geoseg-read", initializer=self._enter)
        return self._pool

    def _enter(self) -> None:
        if self._env is not None:
            env = self._env()
            env.__enter__()
            self._local.env = env  # lives as long as the thread
