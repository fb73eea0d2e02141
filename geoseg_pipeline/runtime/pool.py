"""Where tile tasks run: the worker-pool interface, and the choice between Ray and local threads.

The driver talks only to a :class:`WorkerPool`; Ray is started (or joined) here, for the
``ray`` backend only.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..errors import JobError
from ..spec import ResourceSpec, WorkflowSpec
from ..tasks import BandResult, ItemFacts, ItemJob, ModelInfo
from ..tiling import BandTask

if TYPE_CHECKING:
    from ..storage import S3Config

Backend = Literal["ray", "local"]


def reader_threads(use_gpu: bool, cpus: int) -> int:
    """Threads that read ahead of a worker's model: one beside a CPU model (which has the
    worker's CPUs), one per CPU, two at least, for a GPU model."""
    return max(int(cpus), 2) if use_gpu else 1


class WorkerPool(Protocol):
    """Workers that each hold the model and finish bands of items (see ``TileExecutor.run_band``)."""

    backend: str
    size: int

    def describe(self, in_channels: int | None, roi: tuple[int, ...], fallback: int | None = None) -> ModelInfo:
        """The model's channels and classes; raises ``GeosegError`` when it cannot load."""
        ...

    def nodes(self) -> list[str]:
        """Where each worker runs."""
        ...

    def prepare(self, job: ItemJob) -> ItemFacts:
        """Have a worker stage ``job``'s item and compute its intensity statistics (see
        ``ItemJob.needs_preparation``); waits for it. Raises ``GeosegError`` when it cannot."""
        ...

    def submit(self, worker: int, job: ItemJob, band: BandTask) -> Any:
        """Start finishing ``band`` on ``worker``; returns a handle: a stream of its parts."""
        ...

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        """The handles among ``handles`` with a part (or their end) ready."""
        ...

    def result(self, handle: Any) -> BandResult | None:
        """The next part of a ready handle, ``None`` at its end; raises ``GeosegError`` or
        ``OSError`` when the band failed, ``WorkerLost`` when the worker itself is gone (the
        band is not at fault and runs again elsewhere)."""
        ...

    def probe(self, worker: int) -> Any:
        """Ask a worker that was lost (``WorkerLost``) whether it serves again; see ``revived``."""
        ...

    def revived(self, probe: Any) -> bool | None:
        """The probe's answer: ``True`` the worker serves again, ``False`` not yet (probe again
        later), ``None`` no answer yet."""
        ...

    def release(self, path: str) -> None:
        """Close ``path`` on every worker."""
        ...

    def close(self) -> None:
        """Stop the workers."""
        ...


def choose_backend(resources: ResourceSpec, address: str | None, items: int, connected: bool) -> Backend:
    """The backend for a job of ``items`` items to process.

    ``auto`` picks local threads only for one item, on this machine (no ``address``, Ray not
    already connected), with at most one GPU: there Ray's start-up would cost more than the
    item, and several actors would gain nothing over threads. Every other job uses Ray.

    Raises:
        JobError: ``backend: local`` with a cluster ``address``.
    """
    if resources.backend == "local":
        if address is not None:
            raise JobError(f"resources.backend is local (threads of this process): it cannot run on the Ray "
                           f"cluster at {address}; use backend: ray or auto")
        return "local"
    if resources.backend == "ray" or address is not None or connected:
        return "ray"
    gpus = resources.gpus_per_worker * (resources.workers or 1)
    return "local" if items == 1 and gpus <= 1 else "ray"


@contextmanager
def worker_pool(spec: WorkflowSpec, address: str | None, items: int,
                s3: S3Config | None = None) -> Iterator[WorkerPool]:
    """Workers for the job, stopped afterwards (a local Ray started for it is shut down)."""
    # Ray is imported only for the ray backend; a process that never imported it is not connected
    connected = "ray" in sys.modules and bool(sys.modules["ray"].is_initialized())
    backend = choose_backend(spec.resources, address, items, connected)
    with contextlib.ExitStack() as stack:
        if backend == "local":
            from .local import LocalPool

            pool: WorkerPool = LocalPool(spec.predictor_model, spec.resources, spec.inference, s3)
        else:
            from .actors import RayActorPool
            from .cluster import ray_session

            stack.enter_context(ray_session(address))
            pool = RayActorPool(spec.predictor_model, spec.resources, spec.inference, s3)
        stack.callback(pool.close)
        yield pool
