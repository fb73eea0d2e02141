"""Storage: where bytes live, below both ``sources/`` and ``sinks/``.

* :mod:`.uri`: what a location is (local path, ``file://``, ``s3://``); the one URI-scheme rule;
* :mod:`.s3`: :class:`S3Config` (always passed explicitly: readers never read the
  environment), listing, fingerprints, GDAL and fsspec options;
* :mod:`.copy`: the one bounded copy loop, staged through a temporary name and a rename;
* :mod:`.transient`: which I/O failures may pass (object store 5xx, timeouts, dropped
  connections) and are retried, and which are about the content and are not;
* :mod:`.text`: small text files written atomically.

Imports nothing of geoseg but :mod:`geoseg_pipeline.errors`.
"""

from .copy import COPY_CHUNK, GZIP_ERRORS, copy_stream, gzip_file, is_gzip_name, staged_copy
from .s3 import (
    S3Config,
    check_bucket,
    describe_store_error,
    fetch_to,
    glob_s3,
    needs_s3,
    object_fingerprint,
    rasterio_env,
    read_bytes,
    require_s3,
    store_call,
    walk_s3,
    zarr_open_kwargs,
)
from .text import atomic_write_text
from .transient import is_transient
from .uri import (
    SCHEMES,
    display,
    gdal_path,
    is_s3,
    is_uri,
    local_path,
    split_s3,
    staging_dir_for,
    unknown_scheme,
    uri_scheme,
)

__all__ = [
    "COPY_CHUNK",
    "GZIP_ERRORS",
    "SCHEMES",
    "S3Config",
    "atomic_write_text",
    "check_bucket",
    "copy_stream",
    "describe_store_error",
    "display",
    "fetch_to",
    "gdal_path",
    "glob_s3",
    "gzip_file",
    "is_gzip_name",
    "is_s3",
    "is_transient",
    "is_uri",
    "local_path",
    "needs_s3",
    "object_fingerprint",
    "rasterio_env",
    "read_bytes",
    "require_s3",
    "split_s3",
    "staged_copy",
    "staging_dir_for",
    "store_call",
    "unknown_scheme",
    "uri_scheme",
    "walk_s3",
    "zarr_open_kwargs",
]
