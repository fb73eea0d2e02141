"""Inputs in an S3-compatible object store, against a real server on loopback (moto's server
mode): listing globs and prefixes, reading raster windows through GDAL's /vsis3/, NIfTI copied
through s3fs, Zarr through fsspec, ETag fingerprints, and the failures a user meets
(unreachable endpoint, missing bucket, access denied, unknown scheme, bad manifest line,
empty archive)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# the dev extra installs these (moto[s3] with flask, boto3, s3fs): a missing one is a failure, not a skip
import boto3
import nibabel as nib
import numpy as np
import pytest
import rasterio
import s3fs  # noqa: F401
from rasterio.transform import from_origin

from geoseg_pipeline.errors import JobError, SourceError
from geoseg_pipeline.geometry import Window, full_window
from geoseg_pipeline.ledger import fingerprint
from geoseg_pipeline.sources import RasterioSource, open_raster_source
from geoseg_pipeline.sources.discovery import Item, discover, expand_inputs, read_manifest
from geoseg_pipeline.sources.nifti_source import NiftiSource, nifti_header
from geoseg_pipeline.spec import InputSpec
from geoseg_pipeline.storage import (
    S3Config,
    fetch_to,
    gdal_path,
    glob_s3,
    needs_s3,
    object_fingerprint,
    rasterio_env,
    split_s3,
    zarr_open_kwargs,
)

pytestmark = pytest.mark.usefixtures("clean_aws_environment")

BUCKET = "archive"
KEYS = ("testing", "testing")


@pytest.fixture(scope="module")
def config(endpoint: str) -> S3Config:
    return S3Config.from_env({
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": KEYS[0], "AWS_SECRET_ACCESS_KEY": KEYS[1],
        "AWS_REGION": "us-east-1",
    })


def _client(endpoint: str, service: str = "s3", keys: tuple[str, str] = KEYS) -> Any:
    return boto3.client(service, endpoint_url=endpoint, aws_access_key_id=keys[0], aws_secret_access_key=keys[1],
                        region_name="us-east-1")


@dataclass(frozen=True)
class Archive:
    raster: np.ndarray
    volume: np.ndarray
    local: Path


def _geotiff(path: Path, data: np.ndarray) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs="EPSG:32633", transform=from_origin(500000, 5200000, 10, 10),
                       tiled=True, blockxsize=16, blockysize=16) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def archive(endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """s3://archive/ with scenes in sub-prefixes, a Zarr store by suffix and one by metadata,
    NIfTI volumes (plain and gzip), a manifest, and objects of no supported type."""
    local = tmp_path_factory.mktemp("upload")
    rng = np.random.default_rng(3)
    raster = rng.integers(0, 1000, (3, 40, 48)).astype("uint16")
    _geotiff(local / "scene.tif", raster)
    volume = rng.normal(size=(9, 11, 7)).astype(np.float32)
    img = nib.Nifti1Image(volume, np.diag([0.8, 0.9, 2.5, 1.0]))
    nib.save(img, local / "ct.nii.gz")
    nib.save(img, local / "t1.nii")
    s3 = _client(endpoint)
    s3.create_bucket(Bucket=BUCKET)
    for key in ("scenes/2024/a.tif", "scenes/2024/06/b.tif", "scenes/c.TIF", "private/d.tif"):
        s3.upload_file(str(local / "scene.tif"), BUCKET, key)
    for key, body in (("scenes/notes.txt", b"hello"), ("scenes/m.zarr/zarr.json", b"{}"),
                      ("scenes/m.zarr/c/0/0", b"0"), ("scenes/plain/zarr.json", b"{}"),
                      ("scenes/.hidden.tif", b"0"), ("empty/readme.md", b"nothing here")):
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    s3.upload_file(str(local / "ct.nii.gz"), BUCKET, "volumes/ct.nii.gz")
    s3.upload_file(str(local / "t1.nii"), BUCKET, "volumes/t1.nii")
    truncated = (local / "ct.nii.gz").read_bytes()[:-40]
    s3.put_object(Bucket=BUCKET, Key="volumes/broken.nii.gz", Body=truncated)
    return Archive(raster, volume, local)


# --- configuration -------------------------------------------------------------------------------


def test_config_from_the_gdal_style_environment() -> None:
    cfg = S3Config.from_env({"AWS_S3_ENDPOINT": "minio:9000", "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE",
                             "AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": "eu-west-3"})
    assert cfg.endpoint_url == "http://minio:9000" and cfg.uses_path_style and cfg.region == "eu-west-3"
    assert "secret" not in repr(cfg)
    opts = cfg.gdal_options()
    assert (opts["AWS_HTTPS"], opts["AWS_VIRTUAL_HOSTING"], opts["GDAL_HTTP_MAX_RETRY"]) == ("NO", "FALSE", "0")
    so = cfg.storage_options()
    assert so["endpoint_url"] == "http://minio:9000" and so["key"] == "id" and so["secret"] == "secret"
    assert so["config_kwargs"]["s3"] == {"addressing_style": "path"}
    assert so["client_kwargs"] == {"region_name": "eu-west-3"}


def test_config_defaults_and_precedence() -> None:
    cfg = S3Config.from_env({})
    assert cfg.endpoint_url is None and not cfg.uses_path_style and not cfg.unsigned
    assert "AWS_HTTPS" not in cfg.gdal_options() and cfg.gdal_options()["AWS_VIRTUAL_HOSTING"] == "TRUE"
    both = S3Config.from_env({"AWS_ENDPOINT_URL_S3": "https://s3.example.org", "AWS_ENDPOINT_URL": "http://other",
                              "AWS_S3_ENDPOINT": "third:1", "AWS_NO_SIGN_REQUEST": "YES", "AWS_MAX_ATTEMPTS": "1"})
    assert both.endpoint_url == "https://s3.example.org" and both.unsigned and both.max_attempts == 1
    assert both.gdal_options()["AWS_HTTPS"] == "YES" and both.storage_options()["anon"] is True
    with pytest.raises(ValueError, match="AWS_MAX_ATTEMPTS must be a whole number, got 'x'"):
        S3Config.from_env({"AWS_MAX_ATTEMPTS": "x"})
    with pytest.raises(ValueError, match=r"endpoint must look like http\(s\)://host\[:port\], got 'minio:9000'"):
        S3Config(endpoint_url="minio:9000")


def test_a_job_without_s3_gets_a_plain_gdal_environment() -> None:
    assert not needs_s3(["/data/a.tif", "file:///b.tif"]) and needs_s3(["/data/a.tif", "s3://bkt/b.tif"])
    with rasterio_env(None, gdal_cache_mb=32):
        assert rasterio.env.getenv()["GDAL_CACHEMAX"] == 32 * 2**20  # bytes, as rasterio passes it on
        assert "AWS_VIRTUAL_HOSTING" not in rasterio.env.getenv()


def test_uri_helpers() -> None:
    assert split_s3("s3://bkt/a/b.tif") == ("bkt", "a/b.tif")
    assert gdal_path("s3://bkt/a/b.tif") == "/vsis3/bkt/a/b.tif"
    with pytest.raises(ValueError, match="'B_' is not a bucket name"):
        split_s3("s3://B_/a.tif")


# --- listing -------------------------------------------------------------------------------------


def test_listing_an_s3_glob(archive: Archive, config: S3Config) -> None:
    assert glob_s3(f"s3://{BUCKET}/scenes/*.TIF", config) == [(f"s3://{BUCKET}/scenes/c.TIF", False)]
    items, unmatched = expand_inputs([f"s3://{BUCKET}/scenes/**/*.tif", f"s3://{BUCKET}/scenes/*.zarr"], s3=config)
    assert items == [
        Item("b", f"s3://{BUCKET}/scenes/2024/06/b.tif"),
        Item("a", f"s3://{BUCKET}/scenes/2024/a.tif"),
        Item("m", f"s3://{BUCKET}/scenes/m.zarr"),
    ]
    assert unmatched == []


def test_a_prefix_expands_like_a_folder(archive: Archive, config: S3Config) -> None:
    found = discover(InputSpec(paths=(f"s3://{BUCKET}/scenes/",)), kind="raster", s3=config)
    assert [i.path.removeprefix(f"s3://{BUCKET}/scenes/") for i in found.items] == [
        "2024/06/b.tif", "2024/a.tif", "c.TIF", "m.zarr", "plain",
    ]
    volumes = discover(InputSpec(paths=(f"s3://{BUCKET}/volumes/",), format="nifti"), s3=config)
    assert [i.name for i in volumes.items] == ["broken", "ct", "t1"]


def test_a_glob_matching_nothing_and_an_empty_archive(archive: Archive, config: S3Config) -> None:
    items, unmatched = expand_inputs([f"s3://{BUCKET}/scenes/*.jp2"], s3=config)
    assert items == [] and unmatched == [f"s3://{BUCKET}/scenes/*.jp2: matches no object"]
    with pytest.raises(JobError, match=rf"no input items: s3://{BUCKET}/empty/: the prefix holds no .tif, .tiff, "
                                       r"\.zarr object or Zarr store"):
        discover(InputSpec(paths=(f"s3://{BUCKET}/empty/",)), kind="raster", s3=config)
    with pytest.raises(JobError, match="no input items"):
        discover(InputSpec(paths=(f"s3://{BUCKET}/no/such/prefix/",)), s3=config)


def test_a_literal_key_is_an_item_without_asking_the_store(archive: Archive, free_port: Callable[[], int]) -> None:
    nowhere = S3Config(endpoint_url=f"http://127.0.0.1:{free_port()}")
    items, _ = expand_inputs([f"s3://{BUCKET}/scenes/x.tif", f"s3://{BUCKET}/s.zarr/"], s3=nowhere)
    assert items == [Item("x", f"s3://{BUCKET}/scenes/x.tif"), Item("s", f"s3://{BUCKET}/s.zarr")]


def test_a_manifest_in_the_store_with_relative_keys_and_a_bad_line(archive: Archive, config: S3Config,
                                                                   endpoint: str) -> None:
    body = "uri,item,site\n2024/a.tif,a_june,Lyon\n../volumes/t1.nii,,Nancy\n,,empty\ngs://x/y.tif,,gcs\n"
    _client(endpoint).put_object(Bucket=BUCKET, Key="scenes/list.csv", Body=body.encode())
    items = read_manifest(f"s3://{BUCKET}/scenes/list.csv", config)
    assert [(i.name, i.path, dict(i.metadata), i.error) for i in items] == [
        ("a_june", f"s3://{BUCKET}/scenes/2024/a.tif", {"site": "Lyon"}, None),
        ("t1", f"s3://{BUCKET}/volumes/t1.nii", {"site": "Nancy"}, None),
        ("list:4", "", {"site": "empty"}, f"s3://{BUCKET}/scenes/list.csv, line 4: no path or URI"),
        ("y", "gs://x/y.tif", {"site": "gcs"}, f"s3://{BUCKET}/scenes/list.csv, line 5: gs://x/y.tif: unsupported "
                                               "URI scheme gs://; use a local path or s3://bucket/key"),
    ]


def test_an_unknown_scheme(config: S3Config) -> None:
    items, _ = expand_inputs(["gs://bucket/a.tif"], s3=config)
    assert items[0].error == "gs://bucket/a.tif: unsupported URI scheme gs://; use a local path or s3://bucket/key"
    with pytest.raises(ValueError, match="each entry must be a path, a glob or a URI with scheme file://, s3://"):
        InputSpec(paths=("gs://bucket/a.tif",))


# --- reading -------------------------------------------------------------------------------------


def test_reading_a_raster_window_through_vsis3(archive: Archive, config: S3Config) -> None:
    uri = f"s3://{BUCKET}/scenes/2024/a.tif"
    window = Window((5, 7), (20, 30))
    with config.rasterio_env(GDAL_CACHEMAX=16 * 2**20):
        src = open_raster_source(uri)  # no change needed in the raster sources: rasterio maps s3:// to /vsis3/
        try:
            assert src.grid.shape == (40, 48) and src.band_count == 3
            np.testing.assert_array_equal(src.read(window, [3, 1]), archive.raster[[2, 0], 5:25, 7:37])
        finally:
            src.close()
        vsi = RasterioSource(gdal_path(uri))
        try:
            np.testing.assert_array_equal(vsi.read(window, [1, 2, 3]), archive.raster[:, 5:25, 7:37])
        finally:
            vsi.close()


def test_reading_a_nifti_copied_through_s3fs(archive: Archive, config: S3Config, tmp_path: Path) -> None:
    expected = NiftiSource(str(archive.local / "t1.nii")).read(full_window((9, 11, 7)))
    for key in ("volumes/ct.nii.gz", "volumes/t1.nii"):
        uri = f"s3://{BUCKET}/{key}"
        local = fetch_to(uri, tmp_path / "scratch", config)
        assert local.suffix == ".nii" and local.parent == tmp_path / "scratch"
        src = NiftiSource(uri, data_path=str(local))
        assert src.path == uri and src.grid.zooms == pytest.approx((0.8, 0.9, 2.5))
        np.testing.assert_array_equal(src.read(full_window((9, 11, 7))), expected)
        np.testing.assert_allclose(expected[0], archive.volume, rtol=1e-6)
    assert sorted(p.name for p in (tmp_path / "scratch").iterdir() if p.name.startswith(".")) == []


def test_a_nifti_header_without_copying_the_volume(archive: Archive, config: S3Config) -> None:
    for key in ("volumes/ct.nii.gz", "volumes/t1.nii"):
        header = nifti_header(f"s3://{BUCKET}/{key}", config)
        assert header.get_data_shape() == (9, 11, 7)
        assert header.get_zooms() == pytest.approx((0.8, 0.9, 2.5))
    with pytest.raises(SourceError, match=r"scenes/c\.TIF: not a NIfTI-1/2 file"):
        nifti_header(f"s3://{BUCKET}/scenes/c.TIF", config)


def test_a_truncated_gzip_object_fails_clearly_and_leaves_nothing(archive: Archive, config: S3Config,
                                                                  tmp_path: Path) -> None:
    uri = f"s3://{BUCKET}/volumes/broken.nii.gz"
    with pytest.raises(SourceError, match=rf"{uri}: truncated or corrupt gzip"):
        fetch_to(uri, tmp_path, config)
    assert list(tmp_path.iterdir()) == []
    plain = fetch_to(uri, tmp_path, config, gunzip=False)  # the bytes as stored
    assert plain.name.endswith("-broken.nii.gz")
    assert plain.read_bytes() == (archive.local / "ct.nii.gz").read_bytes()[:-40]


def test_reading_a_zarr_store_through_fsspec(archive: Archive, config: S3Config) -> None:
    import zarr

    uri = f"s3://{BUCKET}/stores/mosaic.zarr"
    data = archive.raster[:, :32, :32]
    out = zarr.open_array(uri, mode="w", shape=data.shape, chunks=(3, 16, 16), dtype=data.dtype,
                          storage_options=config.storage_options())
    out[:] = data
    out.attrs.update(crs="EPSG:32633", transform=[10, 0, 500000, 0, -10, 5200000])
    back = zarr.open_array(uri, mode="r", **zarr_open_kwargs(uri, config))
    assert zarr_open_kwargs("/local/m.zarr", None) == {}
    with pytest.raises(SourceError, match="without an object-store configuration"):
        zarr_open_kwargs(uri, None)  # readers never fall back to the environment
    np.testing.assert_array_equal(back[:, 4:20, 8:24], data[:, 4:20, 8:24])
    assert expand_inputs([f"s3://{BUCKET}/stores/"], s3=config)[0] == [Item("mosaic", uri)]


# --- fingerprints --------------------------------------------------------------------------------


def test_the_etag_fingerprint_changes_when_the_object_is_overwritten(archive: Archive, config: S3Config,
                                                                     endpoint: str) -> None:
    s3 = _client(endpoint)
    uri = f"s3://{BUCKET}/fp/scene.bin"
    s3.put_object(Bucket=BUCKET, Key="fp/scene.bin", Body=b"A" * 100)
    first = fingerprint(uri, s3=config)
    assert first.startswith("s3:100:") and len(first) > len("s3:100:")
    assert fingerprint(uri, s3=config) == first
    s3.put_object(Bucket=BUCKET, Key="fp/scene.bin", Body=b"B" * 100)  # same size, other content
    second = fingerprint(uri, s3=config)
    assert second.startswith("s3:100:") and second != first
    store = f"s3://{BUCKET}/fp/m.zarr"
    s3.put_object(Bucket=BUCKET, Key="fp/m.zarr/zarr.json", Body=b"{}")
    before = object_fingerprint(store, config)
    assert before.startswith("s3dir:1:")
    s3.put_object(Bucket=BUCKET, Key="fp/m.zarr/c/0", Body=b"chunk")
    assert object_fingerprint(store, config).startswith("s3dir:2:")
    with pytest.raises(SourceError, match=rf"s3://{BUCKET}/fp/gone.tif: .*not found|no such object"):
        fingerprint(f"s3://{BUCKET}/fp/gone.tif", s3=config)


# --- failures ------------------------------------------------------------------------------------


def test_an_unreachable_endpoint_fails_within_seconds_naming_the_uri(
    archive: Archive, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    dead = S3Config.from_env({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_ACCESS_KEY_ID": "k",
                              "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "us-east-1"})
    checks = [
        (lambda: expand_inputs([f"s3://{BUCKET}/scenes/*.tif"], s3=dead),
         rf"s3://{BUCKET}/scenes/\*\.tif: cannot list"),
        (lambda: expand_inputs([f"s3://{BUCKET}/scenes/"], s3=dead), rf"s3://{BUCKET}/scenes/: cannot list"),
        (lambda: fingerprint(f"s3://{BUCKET}/scenes/c.TIF", s3=dead), rf"s3://{BUCKET}/scenes/c\.TIF: cannot read"),
        (lambda: fetch_to(f"s3://{BUCKET}/volumes/t1.nii", tmp_path, dead), rf"s3://{BUCKET}/volumes/t1\.nii: cannot"),
    ]
    for call, message in checks:
        started = time.monotonic()
        with pytest.raises(SourceError, match=message) as info:
            call()
        assert time.monotonic() - started < 8.0
        assert "cannot reach http://127.0.0.1:" in str(info.value) and "AWS_ENDPOINT_URL" in str(info.value)
    started = time.monotonic()
    with dead.rasterio_env(), pytest.raises(SourceError, match=rf"s3://{BUCKET}/scenes/c\.TIF: cannot open"):
        open_raster_source(f"s3://{BUCKET}/scenes/c.TIF")
    assert time.monotonic() - started < 8.0


def test_a_missing_bucket(archive: Archive, config: S3Config, tmp_path: Path) -> None:
    for pattern in ("s3://no-such-bucket/*.tif", "s3://no-such-bucket/scenes/"):
        with pytest.raises(SourceError, match=rf"{pattern.replace('*', '[*]')}: bucket 'no-such-bucket' does not "
                                              "exist at http://127.0.0.1:"):
            expand_inputs([pattern], s3=config)
    with pytest.raises(SourceError, match=r"s3://no-such-bucket/a\.tif: cannot"):
        fetch_to("s3://no-such-bucket/a.tif", tmp_path, config)
    with pytest.raises(OSError, match=r"s3://no-such-bucket/a\.tif: "):
        fingerprint("s3://no-such-bucket/a.tif", s3=config)


@pytest.fixture()
def list_only_user(endpoint: str, archive: Archive) -> Iterator[S3Config]:
    """An IAM user that may list the bucket and read ``scenes/`` only, with moto enforcing IAM
    (in-process: the threaded server shares moto's settings)."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    iam = _client(endpoint, "iam")
    name = f"scenes-reader-{time.monotonic_ns()}"
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="list-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": f"arn:aws:s3:::{BUCKET}"},
                      {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": f"arn:aws:s3:::{BUCKET}/scenes/*"}],
    }))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    previous = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    try:
        yield S3Config.from_env({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                                 "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_REGION": "us-east-1"})
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = previous


def test_access_denied(list_only_user: S3Config, tmp_path: Path) -> None:
    cfg = list_only_user
    assert [i.name for i in expand_inputs([f"s3://{BUCKET}/scenes/*.TIF"], s3=cfg)[0]] == ["c"]  # allowed
    assert fingerprint(f"s3://{BUCKET}/scenes/c.TIF", s3=cfg).startswith("s3:")
    uri = f"s3://{BUCKET}/volumes/t1.nii"
    with pytest.raises(SourceError, match=rf"{uri}: cannot copy into .*: access denied .*check the credentials"):
        fetch_to(uri, tmp_path, cfg)
    with pytest.raises(SourceError, match=rf"{uri}: cannot read the object's metadata: access denied"):
        fingerprint(uri, s3=cfg)
    with cfg.rasterio_env():
        open_raster_source(f"s3://{BUCKET}/scenes/c.TIF").close()
        denied = rf"s3://{BUCKET}/private/d\.tif: cannot open as a raster: .*Access Denied"
        with pytest.raises(SourceError, match=denied):
            open_raster_source(f"s3://{BUCKET}/private/d.tif")
    stranger = S3Config(endpoint_url=cfg.endpoint_url, access_key_id="nobody", secret_access_key="x")
    with pytest.raises(SourceError, match=rf"s3://{BUCKET}/scenes/\*\.tif: cannot list: access denied"):
        expand_inputs([f"s3://{BUCKET}/scenes/*.tif"], s3=stranger)
