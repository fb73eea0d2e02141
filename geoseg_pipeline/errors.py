"""One error hierarchy for the whole package.

Every error derives from :class:`GeosegError` *and* from the closest built-in, so callers can
catch either (``except GeosegError`` or ``except ValueError``), as rasterio does.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


class GeosegError(Exception):
    """Root of all geoseg-pipeline errors."""


class SpecError(GeosegError, ValueError):
    """A workflow file or option is invalid.

    ``problems`` holds one ``(field_path, message)`` pair per problem, so that a CLI can list
    every error at once instead of the first one only.
    """

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems: list[tuple[str, str]] = problems or []


class SourceError(GeosegError, OSError):
    """An input item cannot be opened or read (missing, unreadable, corrupt, unsupported)."""


class TransientSourceError(SourceError):
    """A read failed for a reason that may pass: the object store throttling or answering 5xx,
    a timeout, a dropped connection, ``EIO``/``ETIMEDOUT``/``ESTALE`` on a network file system
    (see :func:`geoseg_pipeline.storage.transient.is_transient`). The tile executor retries it
    with backoff, ``read_retries`` times; any other :class:`SourceError` is final."""


class InputDataError(GeosegError, ValueError):
    """An input item opens but its content cannot be segmented as configured
    (band count, dtype, NaN pixels, size)."""


class ReadRequestError(InputDataError):
    """A read asked for a window outside the item's grid, or for bands (channels) the item does
    not have. Every reader checks this the same way before it reads; never retried."""


class ModelError(GeosegError, RuntimeError):
    """A model cannot be loaded, or disagrees with the workflow or the data."""


class SinkError(GeosegError, OSError):
    """An output cannot be written."""


class JobError(GeosegError, RuntimeError):
    """The job as a whole failed (for example Ray could not be started)."""


class LedgerError(GeosegError, OSError):
    """The run ledger (``OUT/ledger.sqlite``) cannot be opened or written."""


class WorkerError(GeosegError, RuntimeError):
    """A tile task failed in an inference worker (an actor or a local thread); the message
    is the underlying error's, unwrapped from Ray's."""


class WorkerLost(WorkerError):
    """The worker itself is gone (its process or node died, or it is being restarted): what it
    held is not the input's fault and runs again on another worker."""


# ``warnings.catch_warnings`` saves and restores the process's one filter list (PEP 0 of the
# warnings module until Python 3.14): two threads inside it at once restore each other's lists,
# so one thread's "ignore" vanishes while it still needs it (or leaks into the whole process).
_WARNINGS_LOCK = threading.RLock()


@contextmanager
def ignoring_warnings(*rules: tuple[type[Warning], str]) -> Iterator[None]:
    """Ignore the warnings matching ``(category, message regex)`` rules inside the block, safely
    from several threads: geoseg's own uses of the filter list take turns.

    Use it around a library call that warns about something geoseg handles itself (a file
    without georeferencing that is refused with its reason, a MONAI deprecation); never around
    slow work, as the other threads wait.
    """
    with _WARNINGS_LOCK, warnings.catch_warnings():
        for category, message in rules:
            warnings.filterwarnings("ignore", message, category)
        yield


def first_line(exc: BaseException) -> str:
    """The first non-blank line of ``exc``'s message (libraries put pages of context after it),
    or the exception's type name when it has none. A TorchScript error says what failed on its
    last line, after the interpreter's traceback: that line is the one."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].startswith("The following operation failed in the TorchScript interpreter"):
        return lines[-1]
    return lines[0]


def chained_reason(exc: BaseException) -> str:
    """``exc``'s first line, with the chained exception's when the message only points at it
    (rasterio's "Read failed. See previous exception for details." hides GDAL's reason, such as
    ``TIFFReadEncodedStrip() failed``, in ``__cause__``)."""
    text = first_line(exc)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and "previous exception" in text:
        return f"{text.removesuffix(' See previous exception for details.')} ({first_line(cause)})"
    return text
