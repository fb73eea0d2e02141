"""Which read failures may pass if tried again: the one rule every reader applies.

A read that fails because the object store is throttling or briefly unavailable (HTTP 5xx,
``SlowDown``), because a request timed out or a connection dropped, or because a network file
system hiccuped (``EIO``, ``ESTALE``, ...) is *transient*: readers raise
:class:`~geoseg_pipeline.errors.TransientSourceError` for it and the tile executor retries it
with backoff. A failure about the content (a corrupt compressed tile, a wrong type, access
denied, a missing object) is not: trying again gives the same answer.

The rule looks at an exception and every exception it was raised from (``__cause__``, then
``__context__``), because each library wraps the previous one's: s3fs turns a botocore
``ClientError`` into an ``OSError``, rasterio stacks GDAL's errors under a ``RasterioIOError``.
Where an object store's answer is in the chain (a ``ClientError``'s ``response``), its HTTP
status and error code decide alone: s3fs turns every code it does not know into ``EIO``, which
must not make a 400 look like a disk error.

GDAL's ``/vsis3/`` and ``/vsicurl/`` report a failed range request during a read only as a
short read (libtiff's ``"Read error at row ...; got 0 bytes, expected 1536"``): the HTTP status
goes to GDAL's debug log, not to the error. A short read is therefore transient for a reader
of a network object (``remote=True``) and not for a local file, where it means truncation.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from typing import Any

from ..errors import SourceError, TransientSourceError

#: ``errno`` values of failures that may pass: network file systems, sockets, timeouts.
TRANSIENT_ERRNOS: frozenset[int] = frozenset(
    getattr(errno, name) for name in (
        "EIO", "ETIMEDOUT", "ECONNRESET", "ECONNREFUSED", "ECONNABORTED", "EPIPE", "ESTALE", "EAGAIN",
        "EHOSTUNREACH", "ENETUNREACH",
    ) if hasattr(errno, name)
)

#: Exception class names (any class in the MRO) of botocore, aiobotocore, s3fs, aiohttp and
#: urllib3 that mean the request did not complete.
TRANSIENT_CLASS_NAMES: frozenset[str] = frozenset({
    "ReadTimeoutError", "ConnectTimeoutError", "EndpointConnectionError", "ConnectionClosedError",
    "ResponseStreamingError", "IncompleteReadError", "ProxyConnectionError", "FSTimeoutError",
    "ServerDisconnectedError", "ClientPayloadError", "ClientConnectionError", "ServerTimeoutError",
    "ProtocolError", "IncompleteRead",
})

#: HTTP statuses an object store answers when it is overloaded or briefly down.
TRANSIENT_HTTP_STATUS: frozenset[int] = frozenset({429, 500, 502, 503, 504})

#: S3 error codes (``<Error><Code>``) of the same.
TRANSIENT_S3_CODES: frozenset[str] = frozenset({
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling", "ThrottlingException",
    "TooManyRequestsException", "RequestLimitExceeded", "RequestThrottled", "BandwidthLimitExceeded",
    "InternalServerError",
})

_MESSAGE = re.compile(
    r"HTTP (?:response|error) code:? ?(?:429|5\d\d)\b"  # GDAL's /vsicurl/ family
    r"|response_code=(?:429|5\d\d)\b"
    r"|\((?:429|50[0234]|" + "|".join(sorted(TRANSIENT_S3_CODES)) + r")\)"  # botocore's "(Code)"
    + r"|curl error|timed out|time-?out was reached|Connection reset|Connection refused|Connection was reset"
    r"|Could not resolve|Couldn't resolve|Failed to connect|Recv failure|Send failure|SSL_read|Empty reply",
    re.IGNORECASE,
)

_SHORT_READ = re.compile(r"got \d+ bytes?, expected \d+", re.IGNORECASE)

#: A URI other than ``file://``, or a GDAL virtual file system that reads over the network.
_NETWORK_PATH = re.compile(
    r"^(?!file:)[a-z][a-z0-9+.-]*://|/vsi(?:curl|s3|gs|az|adls|oss|swift|webhdfs|hdfs)(?:_streaming)?/",
    re.IGNORECASE,
)


def is_transient(exc: BaseException, *, remote: bool = False) -> bool:
    """Whether the failure ``exc`` (or one it was raised from) may pass if the read is tried again.

    Args:
        exc: the exception a read raised.
        remote: the read was of a network object through GDAL (``s3://``, ``/vsis3/``,
            ``https://``): a short read then means a failed range request, not truncation.

    True for:

    * an ``OSError`` whose ``errno`` is in :data:`TRANSIENT_ERRNOS`; ``TimeoutError``,
      ``ConnectionError``;
    * botocore / aiobotocore / s3fs / aiohttp exceptions named in :data:`TRANSIENT_CLASS_NAMES`;
    * an object store's answer with a status in :data:`TRANSIENT_HTTP_STATUS` or a code in
      :data:`TRANSIENT_S3_CODES` (and, when such an answer is in the chain, only then);
    * GDAL and botocore messages saying so (``HTTP response code: 503``, ``(SlowDown)``,
      ``curl error``, ``timed out``, ``Connection reset``, ``Could not resolve``);
    * with ``remote``, a short read (``got 0 bytes, expected 1536``).
    """
    chain = list(_chain(exc))
    for err in chain:
        answer = _store_answer(err)
        if answer is not None:
            status, code = answer
            return status in TRANSIENT_HTTP_STATUS or code in TRANSIENT_S3_CODES
    for err in chain:
        names = {cls.__name__ for cls in type(err).__mro__}
        if names & TRANSIENT_CLASS_NAMES or isinstance(err, TimeoutError | ConnectionError):
            return True
        if isinstance(err, OSError) and err.errno in TRANSIENT_ERRNOS:
            return True
        text = str(err)
        if _MESSAGE.search(text) or (remote and _SHORT_READ.search(text)):
            return True
    return False


def read_error(message: str, exc: BaseException, path: str) -> SourceError:
    """The error a reader raises (``from exc``) when reading ``path`` failed with ``exc``:
    a :class:`~geoseg_pipeline.errors.TransientSourceError` when :func:`is_transient` says the
    failure may pass, else a plain :class:`~geoseg_pipeline.errors.SourceError`.

    Args:
        message: the message, the same either way.
        exc: what the reading library raised.
        path: what was read: an ``s3://`` (or other) URI or a GDAL network path
            (``/vsis3/...``, ``/vsicurl/...``) makes a short read transient (see the module
            docstring); a local path does not.
    """
    kind = TransientSourceError if is_transient(exc, remote=is_network_path(path)) else SourceError
    return kind(message)


#: What GDAL says when opening a network object failed for a reason that trying again cannot
#: mend: the object is missing, refused, or not a raster.
_PERMANENT_OPEN = re.compile(
    r"not recognized as|not a supported|No such file|does not exist|Access ?Denied|Forbidden|NoSuch(?:Key|Bucket)"
    r"|InvalidAccessKeyId|SignatureDoesNotMatch|InvalidBucketName|HTTP (?:response|error) code:? ?40[0134]\b",
    re.IGNORECASE,
)


def open_error(message: str, exc: BaseException, path: str) -> SourceError:
    """The error a reader raises (``from exc``) when opening ``path`` failed with ``exc``: as
    :func:`read_error`, and for a network object also transient whenever the failure does not say
    the object is missing, refused or not a raster. GDAL reports an object store's error answer
    to an open by its message alone (``Please reduce your request rate.``), without the HTTP
    status that would tell a throttled request from a refused one."""
    remote = is_network_path(path)
    if is_transient(exc, remote=remote):
        return TransientSourceError(message)
    if remote and not any(_PERMANENT_OPEN.search(str(e)) for e in _chain(exc)):
        return TransientSourceError(message)
    return SourceError(message)


def is_network_path(path: str) -> bool:
    """Whether ``path`` is read over the network: a URI other than ``file://``, or a GDAL
    network file system (``/vsis3/``, ``/vsicurl/``, ...)."""
    return _NETWORK_PATH.search(path) is not None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it was raised from (``__cause__``, else ``__context__``), once each."""
    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)


def _store_answer(err: BaseException) -> tuple[int | None, str] | None:
    """``(HTTP status, error code)`` of a botocore ``ClientError`` (its ``response``), else ``None``."""
    response: Any = getattr(err, "response", None)
    if not isinstance(response, dict):
        return None
    error = response.get("Error") or {}
    meta = response.get("ResponseMetadata") or {}
    status = meta.get("HTTPStatusCode")
    code = str(error.get("Code") or "")
    if status is None and code.isdigit():  # a HEAD answer has no body: the code is the status
        status = int(code)
    if status is None and not code:
        return None
    return (int(status) if status is not None else None), code


__all__ = [
    "TRANSIENT_CLASS_NAMES", "TRANSIENT_ERRNOS", "TRANSIENT_HTTP_STATUS", "TRANSIENT_S3_CODES", "is_transient",
    "read_error",
]
