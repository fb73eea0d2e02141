"""Inference actors: :class:`TileExecutor` wrapped with ``ray.remote`` here, and only here."""

from __future__ import annotations

from typing import Any

import ray

from ..spec import ModelSpec, ResourceSpec
from ..tasks import ItemJob, TileResult
from ..tiling import TileTask


class InferenceActor:
    """One model per actor: loaded once, on the actor's GPU when it has one, else on CPU with
    torch threads matching its CPUs. Torch is imported inside the actor only."""

    def __init__(self, model: ModelSpec, use_gpu: bool, threads: int) -> None:
        from ..inference.tile_executor import TileExecutor

        self._executor = TileExecutor(model, device="cuda" if use_gpu else "cpu", threads=threads)

    def describe(self, in_channels: int | None, roi: tuple[int, ...], fallback: int | None = None) -> Any:
        """The model's :class:`~geoseg_pipeline.inference.loading.ModelInfo`."""
        return self._executor.describe(in_channels, roi, fallback)

    def run(self, job: ItemJob, task: TileTask) -> TileResult:
        """Process one tile task."""
        return self._executor.run(job, task)

    def release(self, path: str) -> None:
        """Close an item's file once the item is done."""
        self._executor.release(path)

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


def start_actors(model: ModelSpec, resources: ResourceSpec, count: int) -> list[Any]:
    """Start ``count`` inference actors with the configured CPUs and GPUs each."""
    threads = max(int(resources.cpus_per_worker), 1)
    remote_cls = ray.remote(
        num_cpus=resources.cpus_per_worker,
        num_gpus=resources.gpus_per_worker,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}},
    )(InferenceActor)
    use_gpu = resources.gpus_per_worker > 0
    return [remote_cls.remote(model, use_gpu, threads) for _ in range(count)]
