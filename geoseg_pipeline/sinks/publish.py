"""Publishing a job's finished outputs to an S3-compatible object store.

A job always writes to a local directory. When the output directory is ``s3://bucket/prefix``,
that directory is a **staging directory** on local disk (:func:`staging_dir_for`, stable
across runs for the same URI), and a :class:`Publisher` copies the finished outputs up:

* :meth:`Publisher.publish_item`: everything visible in ``STAGING/<item>/`` to
  ``s3://bucket/prefix/<item>/`` (names starting with ``.``, such as the sinks'
  ``.staging-*`` folders and temporary files, are never uploaded);
* :meth:`Publisher.publish_file`: one job-level file (``summary.csv``, ``report.html``,
  ``ledger.sqlite``, ...);
* :meth:`Publisher.fetch_file`: one object back down, such as ``ledger.sqlite`` before a
  re-run, so that finished items are skipped;
* :meth:`Publisher.exists`: whether a recorded output is still in the store;
* :meth:`Publisher.check_writable`: a pre-flight, so that a job fails before doing any work.

**What a reader sees.** S3 makes each object visible whole or not at all (a single PUT, and a
multipart upload, which appears only when it completes). An item is several objects, so its
``stats.json`` is the completion marker: it is deleted first when an item is published again,
uploaded last, and **an item whose** ``stats.json`` **is present is complete**. An item folder
without ``stats.json`` is uploaded as it is, and reads as incomplete.

**Folders replace folders.** A folder of an item (such as ``labels.zarr``) is uploaded file by
file and replaces the remote folder of the same name: objects under it that the local folder no
longer holds are deleted, as the local sinks replace the folder at commit (a Zarr store that
skips empty chunks would otherwise read stale chunks from an earlier run). Files directly in the
item folder are overwritten; other objects under the item's prefix are left alone.

**Permissions** on ``prefix/*``: ``s3:PutObject`` and ``s3:DeleteObject`` (what
:meth:`Publisher.check_writable` tries), ``s3:GetObject`` for :meth:`Publisher.fetch_file`, and
``s3:ListBucket`` on the bucket for folders and :meth:`Publisher.exists`.

Failures raise :class:`~geoseg_pipeline.errors.SinkError`, one line naming the ``s3://`` URI and
what is wrong (endpoint unreachable, bucket missing, access denied), with the configuration of
:class:`~geoseg_pipeline.storage.S3Config`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from ..errors import SinkError
from ..storage import (
    S3Config,
    describe_store_error,
    is_s3,
    is_transient,
    local_path,
    split_s3,
    staging_dir_for,
    uri_scheme,
)
from ..storage.retry import retrying

#: The completion marker of an item: uploaded last (see the module docstring).
STATS_NAME = "stats.json"

#: The object :meth:`Publisher.check_writable` writes and deletes, under the prefix.
MARKER_NAME = ".geoseg-write-check"

#: Files uploaded at the same time (each file under 100 MB is held in memory while it uploads).
UPLOAD_CONCURRENCY = 8

#: Tries of one store operation whose failure may pass (more when ``AWS_MAX_ATTEMPTS`` says so).
STORE_ATTEMPTS = 5

_T = TypeVar("_T")


@dataclass(frozen=True)
class OutputLocation:
    """Where a job's outputs go.

    Args:
        uri: a local directory, or ``s3://bucket/prefix`` (no trailing ``/``; the prefix may be
            empty).
        local_dir: where the job writes: ``uri`` itself when local, else the staging directory
            the outputs are published from.

    Raises:
        ValueError: ``uri`` is neither a local path nor a valid ``s3://`` URI.
    """

    uri: str
    local_dir: Path

    def __post_init__(self) -> None:
        scheme = uri_scheme(self.uri)
        if scheme not in (None, "s3"):
            raise ValueError(f"{self.uri}: unsupported URI scheme {scheme}://; use a local path or s3://bucket/prefix")
        if scheme == "s3":
            split_s3(self.uri)
            if self.uri.endswith("/"):
                raise ValueError(f"output URI must not end with '/', got {self.uri!r}")

    @classmethod
    def parse(cls, out: str | os.PathLike[str], staging_base: Path) -> OutputLocation:
        """The location of the output directory ``out``: a path (``file://`` URIs included), or
        ``s3://bucket/prefix``, staged in :func:`staging_dir_for` ``(out, staging_base)``.

        Raises:
            ValueError: another URI scheme, or an invalid bucket name.
        """
        text = os.fspath(out)
        if is_s3(text):
            uri = text.rstrip("/")
            return cls(uri, staging_dir_for(uri, staging_base))
        text = local_path(text)  # file:///a/b -> /a/b
        return cls(text, Path(text))

    @property
    def is_remote(self) -> bool:
        """Whether outputs are published to an object store."""
        return is_s3(self.uri)

    def uri_for(self, rel: str) -> str:
        """The URI (or local path) of ``rel``, a ``/``-separated path under the location.

        Raises:
            ValueError: ``rel`` is empty, absolute, or has an empty, ``.`` or ``..`` part.
        """
        _check_rel(rel)
        return f"{self.uri}/{rel}" if self.is_remote else str(self.local_dir / rel)


@dataclass(frozen=True)
class Publisher:
    """Copies finished outputs from a remote location's staging directory to the store.

    A small frozen value (picklable, so it can go to a Ray actor as it is); the ``s3fs``
    filesystem is taken from :meth:`S3Config.filesystem` on each call (fsspec caches it).

    Raises:
        ValueError: ``location`` is not remote.
    """

    location: OutputLocation
    config: S3Config

    def __post_init__(self) -> None:
        if not self.location.is_remote:
            raise ValueError(f"{self.location.uri}: a Publisher needs an s3:// output location")

    def publish_item(self, local_item_dir: Path, item: str) -> tuple[str, ...]:
        """Upload every visible file under ``local_item_dir`` to ``<location>/<item>/<relative
        path>``: the item's old ``stats.json`` is deleted, stale objects of its folders too,
        the files are uploaded (:data:`UPLOAD_CONCURRENCY` at a time), ``stats.json`` last.

        Returns:
            the object URIs: the files sorted by path, then ``stats.json`` (when there is one).

        Raises:
            SinkError: ``local_item_dir`` is not a folder, or the store refuses (unreachable,
                missing bucket, access denied; the message names the URI).
            ValueError: ``item`` is not a single path component.
        """
        if "/" in item:
            raise ValueError(f"item must be one path component, got {item!r}")
        prefix = self.location.uri_for(item)
        if not local_item_dir.is_dir():
            raise SinkError(f"{prefix}: cannot publish {local_item_dir}: not a folder")
        files = _visible_files(local_item_dir)
        data = [rel for rel in files if rel != STATS_NAME]
        fs = self._fs()
        old_stats = _path(f"{prefix}/{STATS_NAME}")
        self._call(prefix, "delete the old stats.json before publishing", lambda: fs.rm_file(old_stats), item)
        for folder in sorted({rel.split("/", 1)[0] for rel in data if "/" in rel}):
            self._delete_stale(f"{prefix}/{folder}", {f"{prefix}/{rel}" for rel in data}, item)
        if data:
            self._call(prefix, f"upload {len(data)} files", lambda: fs.put(
                [str(local_item_dir / rel) for rel in data], [_path(f"{prefix}/{rel}") for rel in data],
                batch_size=UPLOAD_CONCURRENCY), item)
        uris = [f"{prefix}/{rel}" for rel in data]
        if STATS_NAME in files:
            uris.append(self.publish_file(local_item_dir / STATS_NAME, f"{item}/{STATS_NAME}"))
        return tuple(uris)

    def publish_file(self, path: Path, rel: str) -> str:
        """Upload one file to ``<location>/<rel>`` (replacing the object); returns its URI.

        Publish ``ledger.sqlite`` after closing the ledger: in WAL mode, recent rows stay in
        ``ledger.sqlite-wal`` until the last connection closes.

        Raises:
            SinkError: the file cannot be read, or the store refuses.
            ValueError: ``rel`` is not a relative ``/``-separated path.
        """
        uri = self.location.uri_for(rel)
        if not path.is_file():
            raise SinkError(f"{uri}: cannot upload {path}: not a file")
        fs = self._fs()
        key = rel.split("/")[0] if "/" in rel else "job"  # an item's file counts for the item
        self._call(uri, "upload", lambda: fs.put_file(str(path), _path(uri)), key)
        return uri

    def fetch_file(self, rel: str, dest: Path) -> bool:
        """Download ``<location>/<rel>`` to ``dest`` (through a temporary file and a rename: a
        failure never leaves a partial ``dest``).

        Returns:
            ``False`` when there is no such object (``dest`` is then left as it was).

        Raises:
            SinkError: the store refuses (unreachable, missing bucket, access denied), or
                ``dest`` cannot be written.
        """
        uri = self.location.uri_for(rel)
        fs = self._fs()
        tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.part"
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp.touch()  # a local failure is reported as one, not as the store's
            self._call(uri, f"download to {dest}", lambda: fs.get_file(_path(uri), str(tmp)))
            os.replace(tmp, dest)
        except SinkError as exc:
            if _missing_object(exc.__cause__):
                return False
            raise
        except OSError as exc:
            raise SinkError(f"{uri}: cannot download to {dest}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def exists(self, uri: str) -> bool:
        """Whether the object (or the folder, such as a ``labels.zarr`` prefix) ``uri`` exists.

        Raises:
            SinkError: the store refuses (unreachable, missing bucket, access denied).
            ValueError: ``uri`` is not an ``s3://`` URI.
        """
        split_s3(uri)
        fs = self._fs()
        try:
            self._call(uri, "check", lambda: fs.info(_path(uri)))
        except SinkError as exc:
            if _missing_object(exc.__cause__):
                return False
            raise
        return True

    def check_writable(self) -> None:
        """Write and delete a small marker object (:data:`MARKER_NAME`) under the location.

        Raises:
            SinkError: the endpoint cannot be reached, the bucket does not exist, or access is
                denied; the message names the location's URI.
        """
        uri = self.location.uri
        marker = _path(self.location.uri_for(MARKER_NAME))
        fs = self._fs()
        self._call(uri, "write", lambda: fs.pipe_file(marker, b"geoseg write check\n"))
        self._call(uri, "delete", lambda: fs.rm_file(marker))

    # -- helpers -------------------------------------------------------------------------------

    def _delete_stale(self, folder_uri: str, keep: set[str], key: str) -> None:
        """Delete the visible objects under ``folder_uri`` that are not in ``keep``."""
        fs = self._fs()
        bucket, _ = split_s3(folder_uri)
        found: list[str] = self._call(folder_uri, "list", lambda: fs.find(_path(folder_uri)), key)
        base = len(_path(folder_uri)) + 1
        stale = [p.split("/", 1)[1] for p in found
                 if f"s3://{p}" not in keep and not any(n.startswith(".") for n in p[base:].split("/"))]
        for start in range(0, len(stale), 1000):  # DeleteObjects takes up to 1000 keys
            batch = {"Objects": [{"Key": key} for key in stale[start:start + 1000]], "Quiet": True}
            out: dict[str, Any] = self._call(folder_uri, "delete stale objects",
                                             partial(fs.call_s3, "delete_objects", Bucket=bucket, Delete=batch), key)
            if out.get("Errors"):
                err = out["Errors"][0]
                denied = "access denied; check the credentials and the policy" if err.get("Code") == "AccessDenied" \
                    else f"{err.get('Code')}: {err.get('Message')}"
                raise SinkError(f"s3://{bucket}/{err.get('Key')}: cannot delete a stale object: {denied}")

    def _fs(self) -> Any:
        """The store's filesystem, without botocore's own retries: :meth:`_call` retries, and
        counts what it retries."""
        return replace(self.config, max_attempts=1).filesystem()

    def _call(self, uri: str, action: str, fn: Callable[[], _T], key: str = "job") -> _T:
        """Run one store operation, tried again (:data:`STORE_ATTEMPTS` times at most, with
        backoff and jitter) while it fails in a way that may pass; each retry is counted for
        ``key`` (an item's name). A failure becomes a one-line :class:`SinkError` naming ``uri``."""
        try:
            return retrying(fn, what=f"{uri}: {action}", kind="upload", key=key,
                            attempts=max(self.config.max_attempts, STORE_ATTEMPTS),
                            transient=lambda e: is_transient(e, remote=True))
        except SinkError:
            raise
        except Exception as exc:  # s3fs/botocore raise OSError subclasses and their own types alike
            if _missing_bucket(exc):
                bucket, _ = split_s3(uri)
                what = f"bucket {bucket!r} does not exist at {self.config.endpoint_url or 'AWS S3'}"
            else:
                what = describe_store_error(exc, self.config)
            raise SinkError(" ".join(f"{uri}: cannot {action}: {what}".split())) from exc


def _check_rel(rel: str) -> None:
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in rel.split("/")):
        raise ValueError(f"expected a relative path such as 'item/stats.json', got {rel!r}")


def _path(uri: str) -> str:
    """``s3://bucket/key`` -> ``bucket/key`` (s3fs' path)."""
    bucket, key = split_s3(uri)
    return f"{bucket}/{key}"


def _visible_files(root: Path) -> list[str]:
    """The ``/``-separated paths of the files under ``root`` with no part starting with ``.``,
    sorted."""
    found: list[str] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(folder).relative_to(root)
        found += [(rel / n).as_posix() for n in names if not n.startswith(".")]
    return sorted(found)


def _error_code(exc: BaseException | None) -> str | None:
    """The S3 error code (``NoSuchBucket``, ``NoSuchKey``, ...) behind an s3fs error, if any."""
    while exc is not None:
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            return str(code) if code is not None else None
        exc = exc.__cause__
    return None


def _missing_bucket(exc: BaseException) -> bool:
    return _error_code(exc) == "NoSuchBucket" or "bucket does not exist" in str(exc)


def _missing_object(exc: BaseException | None) -> bool:
    """A missing key (not a missing bucket, which is a configuration error)."""
    return isinstance(exc, FileNotFoundError) and not _missing_bucket(exc)


__all__ = ["MARKER_NAME", "STATS_NAME", "UPLOAD_CONCURRENCY", "OutputLocation", "Publisher"]
