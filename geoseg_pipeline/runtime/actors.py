"""Inference actors: :class:`TileExecutor` wrapped with ``ray.remote`` here, and only here."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from ..errors import GeosegError, JobError, WorkerError, WorkerLost, first_line
from ..spec import InferenceSpec, ModelSpec, ResourceSpec
from ..tasks import BandResult, ItemFacts, ItemJob, ModelInfo
from ..tiling import BandTask

if TYPE_CHECKING:
    from ..inference.tile_executor import TileExecutor
    from ..storage import S3Config

log = logging.getLogger("geoseg")


class InferenceActor:
    """One model per actor: loaded once, on the actor's GPU when it has one, else on CPU with
    torch threads matching its CPUs. Torch is imported inside the actor only."""

    def __init__(
        self, model: ModelSpec, use_gpu: bool, threads: int, gdal_cache_mb: int, options: InferenceSpec | None = None,
        s3: S3Config | None = None,
    ) -> None:
        # Only the arguments here: the model is loaded by load() (or by the first call of an
        # actor Ray restarted), so that the driver's wait for placement counts placing the actor
        # and starting its process, not loading a large model.
        self._args = (model, use_gpu, threads, gdal_cache_mb, options, s3)
        self._lock = threading.Lock()  # the "prepare" group calls in on a thread of its own
        self._executor: TileExecutor | None = None
        self._load_error: Exception | None = None

    def load(self) -> None:
        """Load the model, once. A model that cannot be loaded is reported by describe() and
        run(), not by dying here: Ray would report only "the actor died" and restart it in vain."""
        with self._lock:
            if self._executor is not None or self._load_error is not None:
                return
            from ..inference.tile_executor import TileExecutor
            from ..storage import rasterio_env
            from .pool import reader_threads

            model, use_gpu, threads, gdal_cache_mb, options, s3 = self._args
            try:
                # GDAL's block cache defaults to 5 % of RAM per process and keeps every decoded
                # input tile, so without a cap an actor's memory grows with the image; the reading
                # threads hold the environment for their lives. A GPU actor's CPUs all read for its
                # model.
                self._executor = TileExecutor(
                    model, device="cuda" if use_gpu else "cpu", threads=threads, options=options, s3=s3,
                    reader_threads=reader_threads(use_gpu, threads),
                    reader_env=lambda: rasterio_env(s3, gdal_cache_mb=gdal_cache_mb),
                )
            except Exception as exc:  # re-raised, with its type, on every call
                self._load_error = exc

    def _ready(self) -> TileExecutor:
        self.load()
        if self._load_error is not None:
            raise self._load_error
        assert self._executor is not None
        return self._executor

    def describe(self, in_channels: int | None, roi: tuple[int, ...], fallback: int | None = None) -> ModelInfo:
        """The model's input channels and classes (one probe forward pass)."""
        return self._ready().describe(in_channels, roi, fallback)

    def run(self, job: ItemJob, band: BandTask) -> Iterator[BandResult]:
        """Finish one band of an item; a Ray streaming generator: each part (the blocks'
        labels) reaches the driver as soon as it is yielded."""
        yield from self._ready().run_band(job, band)

    @ray.method(concurrency_group="prepare")
    def prepare(self, job: ItemJob) -> ItemFacts:
        """Stage an item and compute its intensity statistics, on a thread of its own beside the
        bands this actor runs (the next item is prepared while the current one is inferred)."""
        return self._ready().prepare_item(job)

    def release(self, path: str) -> None:
        """Close an item's file once the item is done."""
        if self._executor is not None:
            self._executor.release(path)

    def pid(self) -> int:
        """The actor's process id."""
        return os.getpid()

    def node(self) -> str:
        """The Ray node this actor runs on."""
        return str(ray.get_runtime_context().get_node_id())


def worker_count(resources: ResourceSpec) -> int:
    """Actors to start: as configured, or as many as the cluster's CPUs (or GPUs) allow."""
    if resources.workers is not None:
        return resources.workers
    total = ray.cluster_resources()  # type: ignore[no-untyped-call]
    if resources.gpus_per_worker > 0:
        return max(int(total.get("GPU", 0) // resources.gpus_per_worker), 1)
    return max(int(total.get("CPU", 1) // resources.cpus_per_worker), 1)


def _started_here() -> bool:
    """True when this process started the Ray instance it is connected to (a local Ray: one
    node, no autoscaler); False for a cluster it joined, or when that cannot be told."""
    node = getattr(ray._private.worker, "_global_node", None)
    is_head = getattr(node, "is_head", None)
    return bool(is_head()) if callable(is_head) else False


def _totals(free: bool = False) -> tuple[float, float]:
    """The cluster's CPUs and GPUs, all of them or those free now."""
    res = ray.available_resources() if free else ray.cluster_resources()  # type: ignore[no-untyped-call]
    return float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))


def _fits(have: float, each: float) -> int:
    """How many ``each`` fit in ``have`` (Ray counts resources in steps of 1e-4)."""
    return int(have / each + 1e-6)


def _count(n: float, unit: str) -> str:
    return f"{n:g} {unit}" + ("" if n == 1 else "s")


def _asked(resources: ResourceSpec) -> str:
    return (f"each asks for {_count(resources.cpus_per_worker, 'CPU')} and {_count(resources.gpus_per_worker, 'GPU')} "
            "(resources.cpus_per_worker, resources.gpus_per_worker)")


def _has(cpus_gpus: tuple[float, float]) -> str:
    return f"{_count(cpus_gpus[0], 'CPU')} and {_count(cpus_gpus[1], 'GPU')}"


def _check_fits(resources: ResourceSpec, count: int) -> None:
    """Fail now when the nodes of the cluster, as they are, can never hold ``count`` actors.

    Only for a Ray that cannot grow: on an autoscaling cluster, actors that do not fit yet make
    the autoscaler add nodes.

    Raises:
        JobError: no node holds one actor, or all nodes together hold fewer than ``count``.
    """
    cpu, gpu = resources.cpus_per_worker, resources.gpus_per_worker
    capacity = 0
    for node in ray.nodes():  # type: ignore[no-untyped-call]
        if not node.get("Alive", False):
            continue
        have = node.get("Resources", {})
        fit = _fits(have.get("CPU", 0.0), cpu)
        if gpu > 0:
            fit = min(fit, _fits(have.get("GPU", 0.0), gpu))
        capacity += fit
    if capacity >= count:
        return
    totals = _totals()
    if capacity > 0:
        where, change = f"its nodes can hold only {capacity}", f"set resources.workers to {capacity} or less"
    elif gpu > 0 and totals[1] == 0:
        where = "this Ray has no GPU"
        change = "set resources.gpus_per_worker: 0 to run on CPUs, or join a Ray cluster with GPUs (--address)"
    else:
        where = "no node of this Ray can hold one"
        change = "lower resources.cpus_per_worker" + (" or gpus_per_worker" if gpu > 0 else "")
    raise JobError(f"cannot place {count} inference actor(s): {_asked(resources)}, but {where} "
                   f"(the cluster has {_has(totals)} in total); {change}")


def start_actors(
    model: ModelSpec, resources: ResourceSpec, count: int, options: InferenceSpec | None = None,
    s3: S3Config | None = None,
) -> list[Any]:
    """Start ``count`` inference actors with the configured CPUs and GPUs each."""
    # Ray sets OMP_NUM_THREADS to the actor's CPUs and the predictor sets torch's threads; a
    # runtime_env here would only keep Ray from using its pre-started workers.
    threads = max(int(resources.cpus_per_worker), 1)
    # A killed actor process is restarted (model loaded again); the scheduler hands the bands it
    # held to the actors that serve: they are pure functions of (item, band), so a re-run gives
    # the same result.
    # "prepare" (staging an item, its z-score) runs on a thread of its own beside the bands;
    # Ray's type hints do not know concurrency_groups
    actor_options: dict[str, Any] = {
        "num_cpus": resources.cpus_per_worker, "num_gpus": resources.gpus_per_worker,
        "max_restarts": resources.max_restarts, "max_task_retries": resources.max_restarts,
        "concurrency_groups": {"prepare": 1},
    }
    remote_cls = ray.remote(**actor_options)(InferenceActor)
    use_gpu = resources.gpus_per_worker > 0
    return [remote_cls.remote(model, use_gpu, threads, resources.gdal_cache_mb, options, s3) for _ in range(count)]


class RayActorPool:
    """Inference actors behind the worker-pool interface the driver uses (see ``pool.py``).

    Needs a connected Ray (``cluster.ray_session``). The constructor returns once every actor
    is placed on a node and started, so a job whose actors cannot be placed fails with a
    :class:`~geoseg_pipeline.errors.JobError` instead of waiting forever: at once on a Ray this
    process started (it cannot grow), after ``resources.placement_timeout_s`` on a cluster.

    Raises:
        JobError: the actors cannot be placed (see above).
    """

    backend = "ray"

    def __init__(
        self, model: ModelSpec, resources: ResourceSpec, options: InferenceSpec | None = None,
        s3: S3Config | None = None,
    ) -> None:
        self.size = worker_count(resources)
        if _started_here():  # no autoscaler can add a node: a request too big for every node never fits
            _check_fits(resources, self.size)
        self._actors = start_actors(model, resources, self.size, options, s3)
        self._await_placement(resources)
        self._load_models()
        self._next_prepare = 0

    def _await_placement(self, resources: ResourceSpec) -> None:
        """Wait until every actor is placed and its process started (the model is loaded after),
        or stop them all.

        Raises:
            JobError: some actors were not placed within ``resources.placement_timeout_s``.
        """
        timeout = resources.placement_timeout_s
        refs = [a.node.remote() for a in self._actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        if len(ready) == len(refs):
            return
        message = (
            f"{len(refs) - len(ready)} of {len(refs)} inference actor(s) not placed within {timeout:g} s "
            f"(resources.placement_timeout_s): {_asked(resources)}; the cluster has {_has(_totals())} in total, "
            f"{_has(_totals(free=True))} free; lower resources.workers, cpus_per_worker or gpus_per_worker, "
            "or raise resources.placement_timeout_s if nodes are still starting or other jobs hold them"
        )
        self.close()
        raise JobError(message)

    def _load_models(self) -> None:
        """Let every placed actor load the model, and wait (as long as it takes: a large model
        on a slow disk may take minutes). A model that cannot be loaded is reported by
        :meth:`describe`.

        Raises:
            GeosegError: an actor died while loading (out of memory, a crash in native code).
        """
        log.info("loading the model on %d inference actor(s)", len(self._actors))
        try:
            ray.get([a.load.remote() for a in self._actors])
        except (RayTaskError, RayActorError) as exc:
            self.close()
            raise _unwrap(exc) from exc

    def describe(self, in_channels: int | None, roi: tuple[int, ...], fallback: int | None = None) -> ModelInfo:
        """The model's input channels and classes, from the first actor.

        Raises:
            GeosegError: the model could not be loaded or probed.
        """
        try:
            info: ModelInfo = ray.get(self._actors[0].describe.remote(in_channels, roi, fallback))
            return info
        except (RayTaskError, RayActorError) as exc:
            raise _unwrap(exc) from exc

    def nodes(self) -> list[str]:
        """The Ray node id of each actor."""
        try:
            return [str(n) for n in ray.get([a.node.remote() for a in self._actors])]
        except (RayTaskError, RayActorError) as exc:
            raise _unwrap(exc) from exc

    def prepare(self, job: ItemJob) -> ItemFacts:
        """Let an actor (each in turn) stage ``job``'s item and compute its statistics; waits.

        Raises:
            GeosegError: the item could not be staged or read (the actor's error, unwrapped).
        """
        lost: WorkerLost | None = None
        for _ in range(len(self._actors)):  # an actor that is gone hands the item to the next
            actor = self._actors[self._next_prepare % len(self._actors)]
            self._next_prepare += 1
            try:
                facts: ItemFacts = ray.get(actor.prepare.options(max_task_retries=0).remote(job))
                return facts
            except (RayTaskError, RayActorError) as exc:
                error = _unwrap(exc)
                if not isinstance(error, WorkerLost):
                    raise error from exc
                lost = error
        assert lost is not None
        raise lost

    def submit(self, worker: int, job: ItemJob, band: BandTask) -> Any:
        """Hand ``band`` to actor ``worker``; a streaming generator of its parts."""
        # no retry by Ray: a band whose actor is lost is handed to another by the scheduler (its
        # actor may never come back: its node is gone and no other node has room for it)
        return self._actors[worker].run.options(num_returns="streaming", max_task_retries=0).remote(job, band)

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        """The streams with a part (or their end) ready: one at least, unless ``timeout`` seconds pass."""
        ready, _ = ray.wait(handles, num_returns=1, timeout=timeout)
        return list(ready)

    def result(self, handle: Any) -> BandResult | None:
        """The next part of a ready stream; ``None`` once the band is finished.

        Raises:
            GeosegError: the band failed; the underlying error's message, unwrapped from Ray's.
        """
        try:
            result: BandResult = ray.get(next(handle))
            return result
        except StopIteration:
            return None
        except (RayTaskError, RayActorError) as exc:
            raise _unwrap(exc) from exc

    def probe(self, worker: int) -> Any:
        """Ask actor ``worker`` where it runs: it answers once it serves again (see ``revived``)."""
        return self._actors[worker].node.options(max_task_retries=0).remote()

    def revived(self, probe: Any) -> bool | None:
        """Whether the actor of ``probe`` serves again: ``None`` while it has not answered,
        ``False`` when it could not (still gone: probe again later)."""
        ready, _ = ray.wait([probe], timeout=0)
        if not ready:
            return None
        try:
            ray.get(probe)
        except (RayTaskError, RayActorError):
            return False
        return True

    def release(self, path: str) -> None:
        """Let every actor close ``path``."""
        for actor in self._actors:
            actor.release.options(max_task_retries=0).remote(path)  # no retry after ray.kill

    def close(self) -> None:
        """Stop the actors."""
        for actor in self._actors:
            ray.kill(actor)


def _unwrap(exc: BaseException) -> GeosegError:
    """The error a user should see, unwrapped from Ray's task errors."""
    if isinstance(exc, RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, GeosegError):
            return cause
        if cause is not None:
            return WorkerError(str(cause) or type(cause).__name__)
        return WorkerError(str(exc).strip().splitlines()[-1])
    if isinstance(exc, RayActorError):
        return WorkerLost(f"an inference actor died: {first_line(exc)}")
    return WorkerError(str(exc))
