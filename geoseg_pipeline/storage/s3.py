"""Items in an S3-compatible object store: ``s3://bucket/key`` URIs.

How each reader gets at an object:

* rasters: GDAL's virtual file system (``/vsis3/bucket/key``; rasterio maps ``s3://`` to it
  itself), configured by :meth:`S3Config.rasterio_env`;
* NIfTI: the object is copied once, in :data:`COPY_CHUNK` pieces, into the item's scratch
  folder (a ``.nii.gz`` is inflated on the way, like
  :func:`~geoseg_pipeline.sources.nifti_source.prepare_volume`): :func:`fetch_to`;
* Zarr stores: zarr's fsspec store, with :meth:`S3Config.storage_options`;
* listing (globs, prefixes) and fingerprints (ETag and size, by a HEAD request): s3fs.

**Configuration** comes from the standard AWS environment, read once by
:meth:`S3Config.from_env` and passed on explicitly (GDAL and boto read the variables under
different names, and a Ray actor on another node does not see the driver's environment):

* ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``: keys (absent:
  boto's default chain: ``AWS_PROFILE`` / ``~/.aws/credentials``, an instance role);
* ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``);
* ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``: an S3-compatible server
  (``http://host:9000``); GDAL's ``AWS_S3_ENDPOINT`` (``host:port``) with ``AWS_HTTPS=NO`` is
  understood too;
* ``AWS_VIRTUAL_HOSTING=FALSE``: path-style requests (the default with a custom endpoint);
* ``AWS_NO_SIGN_REQUEST=YES``: anonymous access to public buckets;
* ``AWS_MAX_ATTEMPTS``: tries per request (default 2).

Connections time out after :attr:`S3Config.connect_timeout` seconds and each request is tried
:attr:`S3Config.max_attempts` times, so an unreachable endpoint fails within seconds, with the
URI in the message.

**Ray actors** inherit the driver's environment only when the job starts its own local Ray
(workers are children of the raylet the driver starts, with the variables set at that moment).
Actors on a cluster (``address="auto"`` or ``HOST:PORT``) have their node's environment: pass
the driver's :class:`S3Config` to them (a small frozen value; it then carries the keys, if
any, in Ray's actor arguments) or set the same variables on every node.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SourceError
from .copy import COPY_CHUNK, is_gzip_name, staged_copy
from .uri import is_s3, split_s3, uri_scheme

_TRUE = ("1", "yes", "true", "on")


@dataclass(frozen=True)
class S3Config:
    """How to reach the object store (see the module docstring for the environment variables).

    Args:
        endpoint_url: an S3-compatible server, ``http(s)://host[:port]``; ``None`` for AWS.
        region: the region; ``None`` lets boto and GDAL pick their default.
        access_key_id, secret_access_key, session_token: keys; ``None`` for boto's default
            credential chain.
        profile: a shared-credentials profile.
        path_style: path-style requests (``http://host/bucket/key``); ``None`` picks them for a
            custom endpoint and virtual hosting for AWS.
        unsigned: anonymous requests (public buckets).
        connect_timeout, read_timeout: seconds.
        max_attempts: tries per request of botocore (s3fs: Zarr inputs, listings; 1 = no
            retry). GDAL reads are tried once: geoseg retries them (``resources.read_retries``).
    """

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    profile: str | None = None
    path_style: bool | None = None
    unsigned: bool = False
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 2

    def __post_init__(self) -> None:
        if self.endpoint_url is not None and uri_scheme(self.endpoint_url) not in ("http", "https"):
            raise ValueError(f"S3 endpoint must look like http(s)://host[:port], got {self.endpoint_url!r}")
        if not (self.connect_timeout > 0 and self.read_timeout > 0):
            raise ValueError(f"S3 timeouts must be positive, got {self.connect_timeout}, {self.read_timeout}")
        if self.max_attempts < 1:
            raise ValueError(f"S3 max_attempts must be at least 1, got {self.max_attempts}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Config:
        """The configuration the AWS environment variables describe (``os.environ`` by default).

        Raises:
            ValueError: a variable has an unusable value (named in the message).
        """
        env = os.environ if environ is None else environ

        def get(*names: str) -> str | None:
            return next((env[n] for n in names if env.get(n)), None)

        endpoint = get("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
        gdal_endpoint = get("AWS_S3_ENDPOINT")
        if endpoint is None and gdal_endpoint is not None:
            https = (get("AWS_HTTPS") or "YES").lower() in _TRUE
            endpoint = gdal_endpoint if uri_scheme(gdal_endpoint) else f"{'https' if https else 'http'}://{gdal_endpoint}"
        hosting = get("AWS_VIRTUAL_HOSTING")
        attempts = get("AWS_MAX_ATTEMPTS") or "2"
        if not attempts.isdigit():
            raise ValueError(f"AWS_MAX_ATTEMPTS must be a whole number, got {attempts!r}")
        return cls(
            endpoint_url=endpoint, region=get("AWS_REGION", "AWS_DEFAULT_REGION"),
            access_key_id=get("AWS_ACCESS_KEY_ID"), secret_access_key=get("AWS_SECRET_ACCESS_KEY"),
            session_token=get("AWS_SESSION_TOKEN"), profile=get("AWS_PROFILE"),
            path_style=None if hosting is None else hosting.lower() not in _TRUE,
            unsigned=(get("AWS_NO_SIGN_REQUEST") or "").lower() in _TRUE, max_attempts=int(attempts),
        )

    @property
    def uses_path_style(self) -> bool:
        """Path-style requests: as configured, else for a custom endpoint only."""
        return self.path_style if self.path_style is not None else self.endpoint_url is not None

    def gdal_options(self) -> dict[str, str]:
        """GDAL configuration options besides the credentials (which go through
        :meth:`rasterio_env`'s session: rasterio refuses them as plain options)."""
        opts = {
            "AWS_VIRTUAL_HOSTING": "FALSE" if self.uses_path_style else "TRUE",
            "GDAL_HTTP_CONNECTTIMEOUT": str(round(self.connect_timeout)),
            "GDAL_HTTP_TIMEOUT": str(round(self.read_timeout)),
            # one try per request: geoseg retries window reads and opens itself (resources.read_retries,
            # with jitter) and counts each retry in summary.json; GDAL's own retries would be unseen
            "GDAL_HTTP_MAX_RETRY": "0",
            # no listing of the object's prefix on open (sidecar files): one GET per open
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        }
        if self.endpoint_url is not None:
            opts["AWS_HTTPS"] = "YES" if self.endpoint_url.lower().startswith("https://") else "NO"
        return opts

    def rasterio_env(self, **options: Any) -> Any:
        """A ``rasterio.Env`` reading ``s3://`` and ``/vsis3/`` paths with this configuration,
        plus the GDAL ``options`` given (for example ``GDAL_CACHEMAX``).

        The credentials are resolved now (boto's chain when no keys are set), so enter it only
        for jobs that read from the store (:func:`rasterio_env`). Needs boto3.
        """
        import importlib.util

        import rasterio
        from rasterio.session import AWSSession

        if importlib.util.find_spec("boto3") is None:
            raise SourceError("reading s3:// rasters needs boto3 (rasterio passes credentials to GDAL through it): "
                              "pip install boto3")

        endpoint = self.endpoint_url.split("://", 1)[1].rstrip("/") if self.endpoint_url else None
        session = AWSSession(
            aws_unsigned=self.unsigned, aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key, aws_session_token=self.session_token,
            region_name=self.region, profile_name=self.profile, endpoint_url=endpoint,
        )
        return rasterio.Env(session=session, **{**self.gdal_options(), **options})

    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments for ``s3fs.S3FileSystem`` (and fsspec / zarr ``storage_options``)."""
        config: dict[str, Any] = {
            "connect_timeout": self.connect_timeout, "read_timeout": self.read_timeout,
            # botocore's max_attempts counts retries; total_max_attempts counts tries, as we do
            "retries": {"total_max_attempts": self.max_attempts, "mode": "standard"},
        }
        if self.uses_path_style:
            config["s3"] = {"addressing_style": "path"}
        opts: dict[str, Any] = {"anon": self.unsigned, "config_kwargs": config, "use_listings_cache": False}
        if self.endpoint_url is not None:
            opts["endpoint_url"] = self.endpoint_url
        if self.region is not None:
            opts["client_kwargs"] = {"region_name": self.region}
        if self.profile is not None:
            opts["profile"] = self.profile
        for name, value in (("key", self.access_key_id), ("secret", self.secret_access_key),
                            ("token", self.session_token)):
            if value is not None and not self.unsigned:
                opts[name] = value
        return opts

    def filesystem(self) -> Any:
        """An ``s3fs.S3FileSystem`` for this configuration (fsspec caches one per configuration)."""
        try:
            import s3fs  # type: ignore[import-untyped]
        except ImportError as exc:
            raise SourceError("s3:// inputs need s3fs: pip install s3fs") from exc
        fs = s3fs.S3FileSystem(**self.storage_options())
        fs.retries = self.max_attempts  # s3fs' own retry loop, on top of botocore's
        return fs


def rasterio_env(config: S3Config | None = None, *, gdal_cache_mb: int | None = None, **options: Any) -> Any:
    """``rasterio.Env(**options)``, configured for ``s3://`` reads when ``config`` is given
    (:meth:`S3Config.rasterio_env`): what the driver and the actors enter for a job.

    ``gdal_cache_mb`` caps GDAL's block cache (``resources.gdal_cache_mb``). rasterio hands an
    integer ``GDAL_CACHEMAX`` to ``GDALSetCacheMax64``, which takes bytes (unlike GDAL's own
    config option, where a number below 100,000 means megabytes), so the megabytes are converted
    here: ``GDAL_CACHEMAX=64`` would leave a cache of 64 bytes, and every read would decode its
    tiles again."""
    import rasterio

    if gdal_cache_mb is not None:
        options["GDAL_CACHEMAX"] = int(gdal_cache_mb) * 2**20
    return rasterio.Env(**options) if config is None else config.rasterio_env(**options)


def needs_s3(paths: Iterable[str]) -> bool:
    """Whether any of ``paths`` is an ``s3://`` URI (so that the job needs an :class:`S3Config`)."""
    return any(is_s3(p) for p in paths)


def zarr_open_kwargs(path: str, config: S3Config | None) -> dict[str, Any]:
    """Extra keyword arguments for ``zarr.open`` / ``zarr.open_array`` of ``path``: the store's
    ``storage_options`` for an ``s3://`` store, none otherwise.

    Raises:
        SourceError: an ``s3://`` store without a configuration (readers never read the
            environment: the driver resolves :meth:`S3Config.from_env` once and passes it on).
    """
    if not is_s3(path):
        return {}
    return {"storage_options": require_s3(path, config).storage_options()}


def require_s3(path: str, config: S3Config | None) -> S3Config:
    """``config``, or a :class:`SourceError` saying that ``path`` needs one."""
    if config is None:
        raise SourceError(f"{path}: an s3:// location was given without an object-store configuration "
                          "(pass an S3Config; geoseg's driver builds one from the AWS_* environment)")
    return config


# -- errors -----------------------------------------------------------------------------------


def describe_store_error(exc: BaseException, config: S3Config) -> str:
    """What went wrong with an object-store call, in words a user can act on (inputs and
    outputs alike)."""
    where = config.endpoint_url or "AWS S3"
    name = type(exc).__name__
    if isinstance(exc, PermissionError) or (isinstance(exc, OSError) and "Forbidden" in str(exc)):  # HEAD: a bare 403
        return f"access denied ({exc}); check the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE) and the policy"
    if isinstance(exc, FileNotFoundError):
        return f"not found ({exc})"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ProxyConnectionError"):
        return f"cannot reach {where} ({exc}); check AWS_ENDPOINT_URL and the network"
    if name in ("ReadTimeoutError", "TimeoutError", "FSTimeoutError"):
        return f"{where} did not answer in time ({exc})"
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return f"no AWS credentials ({exc}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
    return f"{name}: {exc}"


def store_call(uri: str, action: str, config: S3Config, fn: Callable[[], Any]) -> Any:
    """Run one object-store operation; any failure becomes a :class:`SourceError` naming ``uri``."""
    try:
        return fn()
    except SourceError:
        raise
    except Exception as exc:  # s3fs/botocore raise OSError subclasses and their own types alike
        raise SourceError(f"{uri}: cannot {action}: {describe_store_error(exc, config)}") from exc


def check_bucket(uri: str, config: S3Config) -> None:
    """Raise a :class:`SourceError` unless the bucket of ``uri`` exists and answers."""
    bucket, _ = split_s3(uri)
    fs = config.filesystem()

    def head() -> None:
        try:
            fs.info(bucket)
        except FileNotFoundError as exc:
            raise SourceError(f"{uri}: bucket {bucket!r} does not exist at {config.endpoint_url or 'AWS S3'}") from exc

    store_call(uri, "reach the bucket", config, head)


# -- listing ----------------------------------------------------------------------------------


def glob_s3(pattern: str, config: S3Config) -> list[tuple[str, bool]]:
    """Objects and prefixes matching an ``s3://`` glob (``*``, ``?``, ``[..]``, ``**``), sorted.

    The store is listed folder by folder from the pattern's fixed part (one request per folder,
    no deeper than the pattern reaches; never inside a ``*.zarr`` store), so a glob needs
    ``s3:ListBucket`` only. Names starting with ``.`` are left out unless the pattern names
    them, as Python's glob does.

    Returns:
        ``(uri, is_prefix)`` pairs; a prefix is a "folder" (a Zarr store or a folder to expand).

    Raises:
        SourceError: the endpoint cannot be reached, the bucket does not exist, access is denied.
        ValueError: not a valid ``s3://`` glob.
    """
    from fsspec.utils import glob_translate  # type: ignore[import-untyped]

    bucket, key = split_s3(pattern)
    parts = key.split("/")
    fixed = next((i for i, p in enumerate(parts) if glob.has_magic(p)), len(parts))
    regex = re.compile(glob_translate(f"{bucket}/{key}"))
    deep = "**" in parts[fixed:]
    root = f"{bucket}/{'/'.join(parts[:fixed])}".rstrip("/")
    hidden_ok = "/." in pattern
    found: list[tuple[str, bool]] = []
    for folder_uri, dirs, files in walk_s3(f"s3://{root}/", config, shown=pattern):
        folder = folder_uri[len("s3://"):]
        level = folder.count("/") - root.count("/") + 1  # of the entries listed here
        for name, is_dir in [*((d, True) for d in dirs), *((f, False) for f in files)]:
            path = f"{folder}/{name}"
            if name.startswith(".") and not hidden_ok:
                if is_dir:
                    dirs.remove(name)
                continue
            if regex.match(path):
                found.append((f"s3://{path}", is_dir))
            if is_dir and name.lower().endswith(".zarr"):
                dirs.remove(name)  # a store is one item
        if not deep and level >= len(parts) - fixed:
            dirs[:] = []
    return sorted(found)


def walk_s3(uri: str, config: S3Config, shown: str | None = None) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` over the prefix ``uri`` (top down; prune by editing the folder list).

    Args:
        shown: the URI to name in errors (default ``uri``), such as the glob being expanded.

    Yields:
        ``(folder uri, folder names, object names)``.

    Raises:
        SourceError: as :func:`glob_s3`; a prefix with no object is not an error (it yields
            nothing), a missing bucket is.
    """
    bucket, key = split_s3(uri)
    shown = shown or uri
    fs = config.filesystem()
    walker = fs.walk(f"{bucket}/{key}".rstrip("/"), on_error="raise")
    while True:
        try:
            step = store_call(shown, "list", config, lambda: next(walker, None))
        except SourceError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                check_bucket(shown, config)
                return
            raise
        if step is None:
            return
        folder, dirs, files = step
        yield f"s3://{folder}", dirs, files


def read_bytes(uri: str, config: S3Config) -> bytes:
    """The whole content of a (small) object, such as a manifest.

    Raises:
        SourceError: unreachable, missing, access denied.
    """
    split_s3(uri)
    fs = config.filesystem()

    def read() -> bytes:
        with fs.open(uri, "rb") as f:
            data: bytes = f.read()
        return data

    result: bytes = store_call(uri, "read", config, read)
    return result


# -- fingerprints and copies ------------------------------------------------------------------


def object_fingerprint(uri: str, config: S3Config) -> str:
    """``s3:SIZE:ETAG`` of an object (one HEAD request); for a prefix (a Zarr store), a digest of
    every object's key, size and ETag. Changes when an object is overwritten.

    Raises:
        SourceError: unreachable, missing, access denied.
    """
    bucket, key = split_s3(uri)
    fs = config.filesystem()
    path = f"{bucket}/{key}".rstrip("/")
    info: dict[str, Any] = store_call(uri, "read the object's metadata", config, lambda: fs.info(path, refresh=True))
    if info.get("type") != "directory":
        return f"s3:{info.get('size')}:{str(info.get('ETag', '')).strip(chr(34))}"
    listing: dict[str, Any] = store_call(uri, "list", config, lambda: fs.find(path, detail=True))
    if not listing:
        raise SourceError(f"{uri}: no such object or prefix")
    digest = hashlib.sha256()
    for name, meta in sorted(listing.items()):
        digest.update(f"{name[len(path):]}\0{meta.get('size')}\0{meta.get('ETag', '')}\n".encode())
    return f"s3dir:{len(listing)}:{digest.hexdigest()[:32]}"


def fetch_to(uri: str, folder: Path, config: S3Config, *, gunzip: bool | None = None) -> Path:
    """Copy an object into ``folder`` (in :data:`COPY_CHUNK` pieces, to a temporary name, then
    renamed: a failure never leaves a partial file under the final name).

    Args:
        gunzip: inflate on the way (default: when the key ends in ``.gz``, as for ``.nii.gz``);
            the copy is then named without ``.gz``.

    Returns:
        the local copy, ``folder / "<8 hex of the URI>-<file name>"``.

    Raises:
        SourceError: the object cannot be read, the gzip stream is truncated or corrupt, or
            the copy cannot be written.
    """
    _, key = split_s3(uri)
    name = key.rsplit("/", 1)[-1]
    if not name:
        raise SourceError(f"{uri}: names a prefix, not an object")
    inflate = is_gzip_name(name) if gunzip is None else gunzip
    if inflate and is_gzip_name(name):
        name = name[: -len(".gz")]
    target = folder / f"{hashlib.sha1(uri.encode()).hexdigest()[:8]}-{name}"
    fs = config.filesystem()
    return staged_copy(lambda: fs.open(uri, "rb", block_size=COPY_CHUNK, cache_type="readahead"), target,
                       inflate=inflate, what=uri, describe=lambda exc: describe_store_error(exc, config))


__all__ = [
    "S3Config",
    "check_bucket",
    "describe_store_error",
    "fetch_to",
    "glob_s3",
    "needs_s3",
    "object_fingerprint",
    "rasterio_env",
    "read_bytes",
    "require_s3",
    "store_call",
    "walk_s3",
    "zarr_open_kwargs",
]
