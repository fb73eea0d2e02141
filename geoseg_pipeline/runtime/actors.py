"""Inference actors: :class:`TileExecutor` wrapped with ``ray.remote`` here, and only here."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import ray

from ..spec import InferenceSpec, ModelSpec, ResourceSpec
from ..tasks import ItemJob, ModelInfo, TileResult
from ..tiling import TileTask

if TYPE_CHECKING:
    from ..inference.tile_executor import TileExecutor
    from ..sources.remote import S3Config


class InferenceActor:
    """One model per actor: loaded once, on the actor's GPU when it has one, else on CPU with
    torch threads matching its CPUs. Torch is imported inside the actor only."""

    def __init__(
        self, model: ModelSpec, use_gpu: bool, threads: int, gdal_cache_mb: int, options: InferenceSpec | None = None,
        s3: S3Config | None = None,
    ) -> None:
        from ..inference.tile_executor import TileExecutor
        from ..sources.remote import rasterio_env

        # GDAL's block cache defaults to 5 % of RAM per process and keeps every decoded input
        # tile, so without a cap an actor's memory grows with the image. The environment lives
        # as long as the actor does.
        self._gdal_env = rasterio_env(s3, GDAL_CACHEMAX=gdal_cache_mb)
        self._gdal_env.__enter__()
        # A model that cannot be loaded is reported by describe()/run(), not by dying here:
        # Ray would report only "the actor died in its creation task" and restart it in vain.
        self._load_error: Exception | None = None
        try:
            self._executor = TileExecutor(model, device="cuda" if use_gpu else "cpu", threads=threads,
                                          options=options)
        except Exception as exc:  # re-raised, with its type, on every call
            self._load_error = exc

    def _ready(self) -> TileExecutor:
        if self._load_error is not None:
            raise self._load_error
        return self._executor

    def describe(self, in_channels: int | None, roi: tuple[int, ...], fallback: int | None = None) -> ModelInfo:
        """The model's input channels and classes (one probe forward pass)."""
        return self._ready().describe(in_channels, roi, fallback)

    def run(self, job: ItemJob, task: TileTask) -> TileResult:
        """Process one tile task."""
        return self._ready().run(job, task)

    def release(self, path: str) -> None:
        """Close an item's file once the item is done."""
        if self._load_error is None:
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


def start_actors(
    model: ModelSpec, resources: ResourceSpec, count: int, options: InferenceSpec | None = None,
    s3: S3Config | None = None,
) -> list[Any]:
    """Start ``count`` inference actors with the configured CPUs and GPUs each."""
    # Ray sets OMP_NUM_THREADS to the actor's CPUs and the predictor sets torch's threads; a
    # runtime_env here would only keep Ray from using its pre-started workers.
    threads = max(int(resources.cpus_per_worker), 1)
    # A killed actor process is restarted (model loaded again) and the tasks it held are run
    # again on it: tile tasks are pure functions of (item, task), so a retry gives the same result.
    remote_cls = ray.remote(
        num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker,
        max_restarts=resources.max_restarts, max_task_retries=resources.max_restarts,
    )(InferenceActor)
    use_gpu = resources.gpus_per_worker > 0
    return [remote_cls.remote(model, use_gpu, threads, resources.gdal_cache_mb, options, s3) for _ in range(count)]
