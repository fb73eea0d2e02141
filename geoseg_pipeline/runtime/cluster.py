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

    ``address=None`` starts a private local Ray (shut down afterwards) unless the process is
    already connected, even when another Ray runs on the machine; ``"auto"`` or ``HOST:PORT``
    connects to a running cluster. Ray's token authentication stays as the cluster configured
    it (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``).
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
        _client_auth(address)
        # "local" always starts a private instance: a plain ray.init() would join any cluster
        # that happens to run on this machine.
        ray.init(address=address or "local", **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray instance"
        raise JobError(f"cannot start or reach Ray at {where}: {exc}") from exc
    try:
        yield
    finally:
        ray.shutdown()


def _client_auth(address: str | None) -> None:
    """Send the cluster's token when joining an existing cluster.

    ``ray start --head`` turns token authentication on whenever a token exists, but
    ``ray.init(address=HOST:PORT)`` attaches the token only in token mode (Ray 2.59+; see
    ray-project/ray#64755), so the connection is refused. Ray's own helper enables token mode for
    this process when a token is available (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
    ``~/.ray/auth_token``) and ``RAY_AUTH_MODE`` is unset. Authentication is never turned off.
    """
    if address is None:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
