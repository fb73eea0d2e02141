"""Submit workflows to a Ray cluster through the Ray Jobs API, list jobs, read their logs.

The job runs ``geoseg run`` on the cluster's head node with a runtime environment that carries
the workflow (paths resolved to absolute ones: inputs and outputs must be on storage every node
sees) and this package's source (``py_modules``), so the cluster needs only the dependencies.
Ray's token authentication stays on: the client sends the cluster's token
(``RAY_AUTH_TOKEN``, the file named by ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``) as a
bearer token on every request.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..errors import JobError
from ..spec import load_workflow

#: Job states after which nothing changes.
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def cluster_token() -> str | None:
    """The cluster token as Ray looks it up, or ``None``."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    candidates = [Path(path)] if path else [Path.home() / ".ray" / "auth_token"]
    for p in candidates:
        try:
            text = p.read_text(encoding="utf-8").strip()
        except OSError:
            if path:  # a configured file that cannot be read is an error, as in Ray
                raise JobError(f"RAY_AUTH_TOKEN_PATH={path}: cannot read the token file") from None
            continue
        if text:
            return text
    return None


def client(address: str) -> Any:
    """A ``JobSubmissionClient`` for the dashboard at ``address`` (``http://HEAD:8265``).

    Raises:
        JobError: the dashboard cannot be reached or refuses the token.
    """
    from ray.job_submission import JobSubmissionClient

    token = cluster_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except Exception as exc:  # Ray raises assorted types (HTTP, auth, connection) for an unusable server
        hint = "" if token else " (no token found: set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)"
        raise JobError(f"cannot reach the Ray Jobs API at {address}: {exc}{hint}") from exc


def submit(workflow: str | Path, address: str, *, force: bool = False) -> str:
    """Submit ``workflow`` as a Ray job; returns the job id.

    Raises:
        SpecError: the workflow is invalid.
        JobError: the cluster cannot be reached or refuses the job.
    """
    spec = load_workflow(workflow)
    package = Path(__file__).resolve().parents[1]
    stage = Path(tempfile.mkdtemp(prefix="geoseg-submit-"))
    try:
        doc = spec.model_dump(mode="json", exclude_none=True)
        (stage / "workflow.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        entrypoint = "python -m geoseg_pipeline.cli --no-progress run workflow.yaml --address auto"
        if force:
            entrypoint += " --force"
        runtime_env = {
            "working_dir": str(stage),
            "py_modules": [str(package)],
            "excludes": ["__pycache__", "*.pyc"],
        }
        try:
            job_id: str = client(address).submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                                                      metadata={"workflow": spec.name})
        except JobError:
            raise
        except Exception as exc:  # as above: HTTP, auth and connection errors alike
            raise JobError(f"{address}: the job was not accepted: {exc}") from exc
        return job_id
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def wait(address: str, job_id: str, echo: Callable[[str], None] | None = None, poll_s: float = 2.0,
         timeout_s: float | None = None) -> str:
    """Follow a job until it ends, passing new log text to ``echo``; returns its final status."""
    jobs = client(address)
    shown = 0
    started = time.monotonic()
    while True:
        status = str(jobs.get_job_status(job_id))
        status = status.rsplit(".", 1)[-1]
        if echo is not None:
            logs = jobs.get_job_logs(job_id)
            if len(logs) > shown:
                echo(logs[shown:])
                shown = len(logs)
        if status in TERMINAL:
            return status
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise JobError(f"job {job_id} still {status} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def jobs(address: str) -> list[Any]:
    """The cluster's jobs (``JobDetails``), oldest first."""
    return sorted(client(address).list_jobs(), key=lambda j: j.start_time or 0)


def logs(address: str, job_id: str) -> str:
    """A job's log so far."""
    return str(client(address).get_job_logs(job_id))


__all__ = ["TERMINAL", "client", "cluster_token", "jobs", "logs", "submit", "wait"]
