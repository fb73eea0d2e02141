"""Locations: local paths and URIs. The one place that decides what is a URI and which scheme
it has; pure functions, no I/O."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

#: ``scheme://`` at the start of a location (RFC 3986 scheme characters).
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,254}$")

#: URI schemes inputs and outputs may use (``file://`` is a local path).
SCHEMES = ("file", "s3")


def uri_scheme(path: str) -> str | None:
    """``s3://b/k`` -> ``"s3"``; a plain path (``/a/b.tif``, ``C:\\x``) -> ``None``."""
    m = _SCHEME.match(path)
    return m.group(1).lower() if m else None


def is_uri(path: str) -> bool:
    """Whether ``path`` has a URI scheme (``s3://``, ``file://``, ...), so it is not a plain path."""
    return uri_scheme(path) is not None


def is_s3(path: str) -> bool:
    """Whether ``path`` is an ``s3://`` URI."""
    return uri_scheme(path) == "s3"


def unknown_scheme(path: str) -> str | None:
    """The scheme of ``path`` when it is one geoseg cannot read or write (not in :data:`SCHEMES`)."""
    scheme = uri_scheme(path)
    return scheme if scheme is not None and scheme not in SCHEMES else None


def local_path(path: str) -> str:
    """``file:///a/b.tif`` -> ``/a/b.tif``; anything else unchanged."""
    if uri_scheme(path) == "file":
        return unquote(urlparse(path).path)
    return path


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b.tif`` -> ``("bucket", "a/b.tif")``; the key may be empty.

    Raises:
        ValueError: not an ``s3://`` URI, or no valid bucket name.
    """
    if not is_s3(uri):
        raise ValueError(f"{uri}: not an s3:// URI")
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not _BUCKET.match(bucket):
        raise ValueError(f"{uri}: {bucket!r} is not a bucket name (s3://bucket/key)")
    return bucket, key


def gdal_path(uri: str) -> str:
    """The GDAL virtual file system path: ``s3://b/k.tif`` -> ``/vsis3/b/k.tif``."""
    bucket, key = split_s3(uri)
    return f"/vsis3/{bucket}/{key}"


def staging_dir_for(uri: str, base: Path) -> Path:
    """The local staging directory of the output ``uri``: ``base / <16 hex of the URI>``.

    The same URI (with or without a trailing ``/``) gives the same directory in every run, so a
    re-run finds what an interrupted run left there. Pure: nothing is created.
    """
    return base / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]


def display(location: str | Path) -> str:
    """A location as a user wrote it: URIs unchanged (never ``s3:/b`` from a ``Path``)."""
    return location if isinstance(location, str) else str(location)


__all__ = ["SCHEMES", "display", "gdal_path", "is_s3", "is_uri", "local_path", "split_s3", "staging_dir_for",
           "unknown_scheme", "uri_scheme"]
