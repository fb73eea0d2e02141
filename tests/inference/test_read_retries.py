"""Read retries of the tile executor, against real transient faults: a moto S3 server on loopback
behind a proxy (``tests/flaky_s3.py``) that answers the next N GETs of an item's data with an
S3 error, as a throttling or briefly unavailable object store does.

Transient failures (503 ``SlowDown`` / ``ServiceUnavailable``) are retried ``read_retries``
times with backoff and the result is the one of a read that never failed; a read that keeps
failing gives up with the count; a content error (a corrupt tile, access denied) is raised
after one attempt. Also the rule itself, :func:`~geoseg_pipeline.storage.is_transient`.
"""

from __future__ import annotations

import errno
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import rasterio
import zarr
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from flaky_s3 import FlakyS3Proxy
from rasterio.errors import RasterioIOError
from rasterio.transform import from_origin
from s3fs.errors import translate_boto_error  # type: ignore[import-untyped]

from geoseg_pipeline.errors import InputDataError, SourceError, TransientSourceError
from geoseg_pipeline.formats import lookup
from geoseg_pipeline.inference import reading
from geoseg_pipeline.inference.tile_executor import TileExecutor
from geoseg_pipeline.preprocess import Preprocessing
from geoseg_pipeline.sources import SourceOptions, open_source
from geoseg_pipeline.spec import ModelSpec
from geoseg_pipeline.storage import S3Config, is_transient
from geoseg_pipeline.storage.transient import read_error
from geoseg_pipeline.tasks import ItemJob, TileResult
from geoseg_pipeline.tiling import TileTask, plan_tiles

pytestmark = pytest.mark.usefixtures("clean_aws_environment")

BUCKET = "flaky"
KEYS = ("testing", "testing")
SHAPE = (3, 64, 64)  # bands, rows, cols; 16 x 16 tiles / chunks
ROI = (16, 16)
#: The task read in every test: the last 16 x 16 block, one GeoTIFF tile past the first 16 KiB
#: that GDAL fetches on open, one Zarr chunk.
BLOCK = (3, 3)
#: The S3 error injected for each format. s3fs retries ``SlowDown`` itself, 5 times, whatever
#: ``S3Config.max_attempts`` says (zarr builds its own filesystem), so a Zarr read would take
#: seconds to fail; ``ServiceUnavailable`` is as transient and fails at once.
CODE = {"geotiff": "SlowDown", "zarr": "ServiceUnavailable"}


@pytest.fixture(scope="module")
def proxy(endpoint: str) -> Iterator[FlakyS3Proxy]:
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEYS[0], aws_secret_access_key=KEYS[1],
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    with FlakyS3Proxy(endpoint) as p:
        yield p


@pytest.fixture()
def config(proxy: FlakyS3Proxy) -> Iterator[S3Config]:
    """The store through the proxy, one try per request (GDAL_HTTP_MAX_RETRY=0), with the GDAL
    environment an actor enters for a job."""
    proxy.clear()
    cfg = S3Config(endpoint_url=proxy.url, access_key_id=KEYS[0], secret_access_key=KEYS[1], region="us-east-1",
                   max_attempts=1)
    with cfg.rasterio_env():
        yield cfg
    proxy.clear()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reading, "READ_RETRY_DELAY", 0.01)


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 1000, SHAPE).astype("uint16")


@pytest.fixture()
def upload(endpoint: str, pixels: np.ndarray, tmp_path: Path) -> Callable[[str], str]:
    """Store ``pixels`` as a new item of a format (a fresh key each time: GDAL caches what it
    read of an object for the whole process); returns its URI."""
    direct = S3Config(endpoint_url=endpoint, access_key_id=KEYS[0], secret_access_key=KEYS[1], region="us-east-1")

    def _upload(fmt: str) -> str:
        name = f"item-{uuid.uuid4().hex[:8]}"
        if fmt == "geotiff":
            local = _geotiff(tmp_path / f"{name}.tif", pixels)
            boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEYS[0], aws_secret_access_key=KEYS[1],
                         region_name="us-east-1").upload_file(str(local), BUCKET, f"{name}.tif")
            return f"s3://{BUCKET}/{name}.tif"
        uri = f"s3://{BUCKET}/{name}.zarr"
        arr = zarr.open_array(uri, mode="w", shape=SHAPE, chunks=(SHAPE[0], *ROI), dtype=pixels.dtype,
                              storage_options=direct.storage_options())
        arr[:] = pixels
        arr.attrs.update(crs="EPSG:32633", transform=[10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0])
        return uri

    return _upload


@pytest.fixture()
def executor(conv_model: Callable[..., Path], config: S3Config) -> Iterator[TileExecutor]:
    ex = TileExecutor(ModelSpec(type="torchscript", path=conv_model(in_channels=SHAPE[0], classes=3)),
                      device="cpu", threads=1, s3=config)
    yield ex
    ex.close()


def _geotiff(path: Path, data: np.ndarray, **extra: Any) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs="EPSG:32633", transform=from_origin(500000, 5200000, 10, 10),
                       tiled=True, blockxsize=16, blockysize=16, **extra) as dst:
        dst.write(data)
    return path


def _job(uri: str, fmt: str, read_retries: int) -> ItemJob:
    return ItemJob(name="item", path=uri, format=fmt, preprocessing=Preprocessing(bands=(1, 2, 3)), roi_size=ROI,
                   blend="constant", sigma_scale=0.125, batch_size=4, kind="raster", image_shape=SHAPE[1:],
                   read_retries=read_retries)


def _task() -> TileTask:
    return next(t for t in plan_tiles(SHAPE[1:], ROI, 0.0, ROI).tasks() if t.block == BLOCK)


def _data(uri: str) -> str:
    """The proxy pattern of an item's pixel data: a GeoTIFF's ranges past its header, a Zarr
    store's chunks (not its metadata)."""
    key = uri.removeprefix(f"s3://{BUCKET}/")
    return rf"^/{BUCKET}/{key} bytes=(?!0-)" if key.endswith(".tif") else rf"^/{BUCKET}/{key}/c/"


def _failed(proxy: FlakyS3Proxy, pattern: str) -> int:
    return sum(1 for s in proxy.gets(pattern) if s.status >= 400)


def _gets_per_failed_read(proxy: FlakyS3Proxy, config: S3Config, fmt: str, uri: str) -> int:
    """GETs one failed read of the task's window costs with the store down: the layers below the
    executor may try more than once (GDAL re-reads a block before giving up; botocore retries a
    5xx), and the executor's count is of reads, not requests."""
    src = open_source(lookup(fmt, "raster"), uri, SourceOptions(s3=config))
    try:
        proxy.fail_next(1000, _data(uri), code=CODE[fmt])
        with pytest.raises(TransientSourceError):
            src.read(_task().region, [1, 2, 3])
    finally:
        src.close()
        proxy.stop_failing()
    return _failed(proxy, _data(uri))


def _retries_logged(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if r.name == "geoseg" and "retrying" in r.getMessage())


def _assert_same(a: TileResult, b: TileResult) -> None:
    assert (a.region, a.windows_run, a.windows_skipped) == (b.region, b.windows_run, b.windows_skipped)
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.valid, b.valid)


# --- real transient faults ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["geotiff", "zarr"])
def test_a_read_failing_twice_is_retried_and_gives_the_result_of_a_clean_read(
    fmt: str, executor: TileExecutor, proxy: FlakyS3Proxy, config: S3Config, upload: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    clean = executor.run(_job(upload(fmt), fmt, read_retries=3), _task())
    per_read = _gets_per_failed_read(proxy, config, fmt, upload(fmt))
    uri = upload(fmt)
    proxy.fail_next(2 * per_read, _data(uri), code=CODE[fmt])  # the store fails two reads

    with caplog.at_level(logging.WARNING, logger="geoseg"):
        result = executor.run(_job(uri, fmt, read_retries=3), _task())

    _assert_same(result, clean)
    assert _failed(proxy, _data(uri)) == 2 * per_read
    assert _retries_logged(caplog) == 2


@pytest.mark.parametrize("fmt", ["geotiff", "zarr"])
def test_a_read_that_keeps_failing_gives_up_after_read_retries_with_the_count(
    fmt: str, executor: TileExecutor, proxy: FlakyS3Proxy, config: S3Config, upload: Callable[[str], str],
) -> None:
    per_read = _gets_per_failed_read(proxy, config, fmt, upload(fmt))
    uri = upload(fmt)
    proxy.fail_next(5 * per_read, _data(uri), code=CODE[fmt])  # the store fails five reads

    with pytest.raises(SourceError, match=r"reading .* failed 2 time\(s\) \(read_retries=1\); last error: ") as info:
        executor.run(_job(uri, fmt, read_retries=1), _task())

    assert not isinstance(info.value, TransientSourceError)  # final: nothing above retries it again
    assert isinstance(info.value.__cause__, TransientSourceError)
    assert _failed(proxy, _data(uri)) == 2 * per_read  # two reads, then it stopped


# --- content errors -------------------------------------------------------------------------------


def test_access_denied_is_not_retried(executor: TileExecutor, proxy: FlakyS3Proxy, upload: Callable[[str], str],
                                      caplog: pytest.LogCaptureFixture) -> None:
    uri = upload("zarr")
    proxy.fail_next(100, _data(uri), status=403, code="AccessDenied")

    with caplog.at_level(logging.WARNING, logger="geoseg"), pytest.raises(SourceError, match="cannot read") as info:
        executor.run(_job(uri, "zarr", read_retries=3), _task())

    assert not isinstance(info.value, TransientSourceError)
    assert _failed(proxy, _data(uri)) == 1  # one request: no layer tried again
    assert _retries_logged(caplog) == 0


def test_a_corrupt_tile_is_not_retried(executor: TileExecutor, pixels: np.ndarray, tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    path = _geotiff(tmp_path / "corrupt.tif", pixels, compress="deflate")
    with rasterio.open(path) as ds:
        row, col = BLOCK
        offset = int(ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=1))
        size = int(ds.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=1))
    with open(path, "r+b") as f:  # the tile's deflate stream, header included, becomes garbage
        f.seek(offset)
        f.write(b"\xff" * size)

    with caplog.at_level(logging.WARNING, logger="geoseg"), pytest.raises(SourceError, match="cannot read") as info:
        executor.run(_job(str(path), "geotiff", read_retries=3), _task())

    assert not isinstance(info.value, TransientSourceError)
    assert _retries_logged(caplog) == 0


# --- the rule -------------------------------------------------------------------------------------


def _client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


def _raised_from(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as exc:
        return exc


@pytest.mark.parametrize(("exc", "transient"), [
    (OSError(errno.EIO, "Input/output error"), True),
    (OSError(errno.ESTALE, "Stale file handle"), True),
    (OSError(errno.ETIMEDOUT, "Connection timed out"), True),
    (ConnectionResetError(errno.ECONNRESET, "reset"), True),
    (TimeoutError("read timed out"), True),
    (FileNotFoundError(errno.ENOENT, "no such file"), False),
    (PermissionError(errno.EACCES, "denied"), False),
    (ReadTimeoutError(endpoint_url="http://s3"), True),
    (EndpointConnectionError(endpoint_url="http://s3"), True),
    (_client_error(503, "SlowDown"), True),
    (_client_error(500, "InternalError"), True),
    (_client_error(403, "AccessDenied"), False),
    (_client_error(404, "NoSuchKey"), False),
    # s3fs turns codes it does not know into EIO: the store's answer decides, not the errno
    (translate_boto_error(_client_error(400, "InvalidArgument")), False),
    (translate_boto_error(_client_error(503, "SlowDown")), True),
    (RasterioIOError("/vsis3/b/k.tif: HTTP response code: 503"), True),
    (RasterioIOError("/vsis3/b/k.tif: HTTP response code: 404"), False),
    (RasterioIOError("CURL error: Could not resolve host: s3"), True),
    (RasterioIOError("ZIPDecode:Decoding error at scanline 0"), False),
    (RasterioIOError("Read error at row 0, col 0; got 0 bytes, expected 1536"), False),  # a truncated local file
    (_raised_from(SourceError("x: cannot read"), OSError(errno.ETIMEDOUT, "timed out")), True),
    (InputDataError("x: 3 NaN pixels"), False),
    (ValueError("wrong dtype"), False),
])
def test_which_failures_are_transient(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_a_short_read_is_transient_for_a_network_object_only() -> None:
    short = RasterioIOError("TIFFReadEncodedTile:Read error at row 0, col 0; got 0 bytes, expected 1536")
    assert is_transient(short, remote=True) and not is_transient(short)
    assert type(read_error("m", short, "s3://b/k.tif")) is TransientSourceError
    assert type(read_error("m", short, "/vsicurl/https://h/k.tif")) is TransientSourceError
    assert type(read_error("m", short, "/data/k.tif")) is SourceError
    assert type(read_error("m", short, "file:///data/k.tif")) is SourceError
    assert str(read_error("same message", short, "s3://b/k.tif")) == "same message"
