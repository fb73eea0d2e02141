"""Connect to Ray: a local instance started for the job, or an existing cluster."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray

from ..errors import JobError

log = logging.getLogger("geoseg")


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Use Ray for the duration of a job.

    ``address=None`` starts a local Ray (shut down afterwards) unless the process is already
    connected; ``"auto"`` or ``HOST:PORT`` connects to a running cluster. Ray's token
    authentication stays as the cluster configured it (``RAY_AUTH_TOKEN`` or the token file).
    """
    if ray.is_initialized():
        yield
        return
    kwargs: dict[str, Any] = {
        "logging_level": logging.WARNING,
        "log_to_driver": True,
        "configure_logging": True,
    }
    if address is None:
        kwargs["include_dashboard"] = False
        kwargs["num_cpus"] = os.cpu_count() or 1
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray instance"
        raise JobError(f"cannot start or reach Ray at {where}: {exc}") from exc
    try:
        yield
    finally:
        ray.shutdown()
