"""Copies into local files: the one copy loop of the package, bounded in memory, written to a
temporary name and renamed, so that a failure never leaves a partial file under the final name.

Used to stage inputs (inflating a ``.nii.gz``, fetching an object) and to compress outputs.
"""

from __future__ import annotations

import gzip
import os
import shutil
import uuid
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO

from ..errors import SourceError

#: Buffer size of every streaming copy (bounded memory).
COPY_CHUNK = 4 * 1024 * 1024

#: What a truncated or corrupt gzip stream raises while it is read.
GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def copy_stream(src: IO[bytes] | gzip.GzipFile, dst: IO[bytes] | gzip.GzipFile) -> None:
    """Copy ``src`` to ``dst`` in :data:`COPY_CHUNK` pieces."""
    shutil.copyfileobj(src, dst, COPY_CHUNK)


def is_gzip_name(path: str) -> bool:
    """Whether ``path`` names a gzip stream (by its ``.gz`` suffix, as nibabel decides)."""
    return path.lower().endswith(".gz")


def staged_copy(
    open_source: Callable[[], AbstractContextManager[IO[bytes]]], target: Path, *, inflate: bool, what: str,
    describe: Callable[[BaseException], str] = str,
) -> Path:
    """Copy what ``open_source()`` yields into ``target`` (inflating a gzip stream on the way when
    ``inflate``), through ``<target>.<random>.part`` and a rename.

    Args:
        open_source: opens the source as a binary stream (a local file, an object).
        target: the local file to create; its folder is created if needed.
        inflate: the source is gzip-compressed; write the inflated bytes.
        what: the source as the user named it, for messages.
        describe: words for a read or write failure (an object store's errors need some).

    Raises:
        SourceError: a truncated or corrupt gzip stream, or a read or write failure (the
            original exception is the cause).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.part"
    try:
        with open_source() as src, open(tmp, "wb") as dst:
            if inflate:
                with gzip.GzipFile(fileobj=src, mode="rb") as inflated:
                    copy_stream(inflated, dst)
            else:
                copy_stream(src, dst)
        os.replace(tmp, target)
    except GZIP_ERRORS as exc:
        tmp.unlink(missing_ok=True)
        raise SourceError(f"{what}: truncated or corrupt gzip ({exc}); re-export or re-copy it") from exc
    except Exception as exc:  # object-store clients raise their own types as well as OSError
        tmp.unlink(missing_ok=True)
        raise SourceError(f"{what}: cannot copy into {target.parent}: {describe(exc)}") from exc
    return target


def gzip_file(src: Path, dst: Path, *, name: str, level: int = 1) -> None:
    """Compress ``src`` into ``dst`` (gzip with ``name`` in its header, mtime 0: reproducible).

    Raises:
        OSError: a read or write failure.
    """
    with open(src, "rb") as f, open(dst, "wb") as raw, gzip.GzipFile(
        filename=name, mode="wb", fileobj=raw, compresslevel=level, mtime=0
    ) as out:
        copy_stream(f, out)


__all__ = ["COPY_CHUNK", "GZIP_ERRORS", "copy_stream", "gzip_file", "is_gzip_name", "staged_copy"]
