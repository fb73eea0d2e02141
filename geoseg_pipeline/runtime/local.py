"""Tile tasks on threads of the job's own process: one model, no Ray.

For a job of one item on one machine, Ray's fixed cost (starting a local instance, starting
actor processes that import torch, shutting down: 9-12 s on two cores) outweighs the work. This
pool keeps the actors' shape (``workers`` threads with ``cpus_per_worker`` torch threads each,
``max_tasks_in_flight`` per worker) but shares one loaded model between the threads: torch
releases the GIL in its kernels, so the threads compute in parallel as actor processes do.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..errors import GeosegError, WorkerError
from ..spec import InferenceSpec, ModelSpec, ResourceSpec
from ..tasks import BandResult, ItemFacts, ItemJob, ModelInfo
from ..tiling import BandTask

if TYPE_CHECKING:
    from ..inference.predictor import Predictor
    from ..inference.tile_executor import TileExecutor
    from ..storage import S3Config


def local_worker_count(resources: ResourceSpec) -> int:
    """Threads to run: as configured, else one per GPU worker slot (one GPU) or per CPU slot."""
    if resources.workers is not None:
        return resources.workers
    if resources.gpus_per_worker > 0:
        return 1
    return max(int((os.cpu_count() or 1) // resources.cpus_per_worker), 1)


class BandStream:
    """A band's parts as a worker thread yields them: the local twin of a Ray streaming
    generator. ``changed`` is the pool's condition, notified on every part and at the end."""

    def __init__(self, changed: threading.Condition) -> None:
        self._changed = changed
        self._parts: deque[BandResult] = deque()
        self._error: BaseException | None = None
        self._ended = False

    @property
    def ready(self) -> bool:
        """A part, the error or the end is there to take (call with the condition held)."""
        return bool(self._parts) or self._ended

    def produce(self, parts: Callable[[], Iterator[BandResult]]) -> None:
        """Run in a worker thread: every part of ``parts()`` into the stream, then its end."""
        try:
            for part in parts():
                with self._changed:
                    self._parts.append(part)
                    self._changed.notify_all()
        except BaseException as exc:  # handed to the driver by next()
            with self._changed:
                self._error = exc
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def next(self) -> BandResult | None:
        """The next part; ``None`` at the end; the band's error once its parts are taken."""
        with self._changed:
            if self._parts:
                return self._parts.popleft()
            error, self._error = self._error, None
        if error is not None:
            raise error
        return None


class LocalPool:
    """``size`` worker threads around one :class:`Predictor`; each thread has its own open
    sources (a rasterio or nibabel handle is not shared between threads)."""

    backend = "local"

    def __init__(
        self, model: ModelSpec, resources: ResourceSpec, options: InferenceSpec | None = None,
        s3: S3Config | None = None,
    ) -> None:
        import torch

        self.size = local_worker_count(resources)
        self._resources, self._s3 = resources, s3
        self._torch_threads = torch.get_num_threads()  # restored by close(): the caller's process
        self._load_error: Exception | None = None
        self._predictor: Predictor | None = None
        try:
            from ..inference.predictor import Predictor

            self._predictor = Predictor(
                model, device="cuda" if resources.gpus_per_worker > 0 else "cpu",
                threads=max(int(resources.cpus_per_worker), 1), options=options,
            )
        except Exception as exc:  # reported by describe(), as an actor reports it
            self._load_error = exc
        self._local = threading.local()
        self._lock = threading.Lock()
        self._executors: list[TileExecutor] = []
        self._threads = ThreadPoolExecutor(self.size, thread_name_prefix="geoseg-infer")
        self._changed = threading.Condition()

    def _executor(self) -> TileExecutor:
        ex: TileExecutor | None = getattr(self._local, "executor", None)
        if ex is None:
            from ..inference.tile_executor import TileExecutor
            from ..storage import rasterio_env
            from .pool import reader_threads

            assert self._predictor is not None
            res, s3 = self._resources, self._s3
            # rasterio's environment (GDAL cache cap, S3 credentials) is per reading thread
            ex = TileExecutor(self._predictor.spec, predictor=self._predictor, s3=s3,
                              reader_threads=reader_threads(res.gpus_per_worker > 0, int(res.cpus_per_worker)),
                              reader_env=lambda: rasterio_env(s3, gdal_cache_mb=res.gdal_cache_mb))
            self._local.executor = ex
            with self._lock:
                self._executors.append(ex)
        return ex

    def describe(self, in_channels: int | None, roi: tuple[int, ...], fallback: int | None = None) -> ModelInfo:
        """The model's input channels and classes (one probe forward pass).

        Raises:
            GeosegError: the model could not be loaded or probed (a :class:`WorkerError` wraps
                errors from outside the package).
        """
        try:
            if self._load_error is not None:
                raise self._load_error
            assert self._predictor is not None
            return self._predictor.describe(in_channels, roi, fallback)
        except GeosegError:
            raise
        except Exception as exc:
            raise WorkerError(str(exc)) from exc

    def nodes(self) -> list[str]:
        """Where each worker runs: this process."""
        return ["local"] * self.size

    def prepare(self, job: ItemJob) -> ItemFacts:
        """Stage ``job``'s item and compute its statistics in the calling thread (the
        scheduler's opening thread, never its loop); the worker threads read that copy.

        Raises:
            GeosegError: the item could not be staged or read.
        """
        if self._load_error is not None:
            raise WorkerError(f"the model could not be loaded: {self._load_error}")
        try:
            return self._executor().prepare_item(job)
        except (GeosegError, OSError):
            raise
        except Exception as exc:
            raise WorkerError(f"{job.path}: {exc}") from exc

    def submit(self, worker: int, job: ItemJob, band: BandTask) -> BandStream:
        """Queue ``band``; worker threads take bands in order (``worker`` only balances Ray
        actors). Its parts arrive on the returned stream as the thread yields them."""
        stream = BandStream(self._changed)
        self._threads.submit(stream.produce, lambda: self._executor().run_band(job, band))
        return stream

    def wait(self, handles: list[BandStream], timeout: float) -> list[BandStream]:
        """The streams with a part (or their end) ready, after at most ``timeout`` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: any(h.ready for h in handles), timeout)
            return [h for h in handles if h.ready]

    def result(self, handle: BandStream) -> BandResult | None:
        """The next part of a ready stream; ``None`` once the band is finished.

        Raises:
            GeosegError: the band failed (a :class:`WorkerError` wraps errors from outside the
                package, such as torch's).
        """
        try:
            return handle.next()
        except (GeosegError, OSError):
            raise
        except Exception as exc:
            raise WorkerError(str(exc) or type(exc).__name__) from exc

    def probe(self, worker: int) -> None:
        """Threads of this process are never lost: nothing to ask."""
        return None

    def revived(self, probe: None) -> bool:
        """Threads of this process are never lost."""
        return True

    def release(self, path: str) -> None:
        """Close ``path`` in every thread (its item is done; no task of it is running)."""
        with self._lock:
            for ex in self._executors:
                ex.release(path)

    def close(self) -> None:
        """Stop the threads, close every source, and give the process its torch threads back."""
        import torch

        self._threads.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for ex in self._executors:
                ex.close()
            self._executors.clear()
        self._predictor = None
        torch.set_num_threads(self._torch_threads)
