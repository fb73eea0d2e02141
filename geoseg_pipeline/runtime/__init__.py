"""The only package that imports Ray: actors, scheduling and the job driver."""

from .driver import JobResult, run_job

__all__ = ["JobResult", "run_job"]
