"""Publishing outputs to an S3-compatible store, against a real server on loopback (moto's server
mode): item folders with nested files (a Zarr-like folder, hidden staging folders left out),
``stats.json`` uploaded last, folders replaced on a re-run, job-level files up and down, and the
failures a user meets (unreachable endpoint, missing bucket, access denied)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

# the dev extra installs these (moto[s3] with flask, boto3, s3fs): a missing one is a failure, not a skip
import boto3
import pytest
import s3fs

from geoseg_pipeline.errors import SinkError
from geoseg_pipeline.sinks.publish import MARKER_NAME, OutputLocation, Publisher
from geoseg_pipeline.storage import S3Config, staging_dir_for

pytestmark = pytest.mark.usefixtures("clean_aws_environment")

BUCKET = "geoseg-out"  # not the input tests' bucket: moto's state is per process
KEYS = ("testing", "testing")


def _config(endpoint: str, keys: tuple[str, str] = KEYS) -> S3Config:
    return S3Config.from_env({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": keys[0],
                              "AWS_SECRET_ACCESS_KEY": keys[1], "AWS_REGION": "us-east-1"})


def _client(endpoint: str, service: str = "s3") -> Any:
    return boto3.client(service, endpoint_url=endpoint, aws_access_key_id=KEYS[0], aws_secret_access_key=KEYS[1],
                        region_name="us-east-1")


@pytest.fixture(scope="module")
def bucket(endpoint: str) -> str:
    _client(endpoint).create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture()
def publisher(endpoint: str, bucket: str, tmp_path: Path, request: pytest.FixtureRequest) -> Publisher:
    """A publisher to a prefix of its own (one per test)."""
    location = OutputLocation.parse(f"s3://{bucket}/jobs/{request.node.name}/", tmp_path / "cache")
    return Publisher(location, _config(endpoint))


def _objects(endpoint: str, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix`` of the bucket, read back with boto3: relative key -> bytes."""
    s3 = _client(endpoint)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/")
            for o in page.get("Contents", [])]
    return {k[len(prefix) + 1:]: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


def _prefix(publisher: Publisher) -> str:
    return publisher.location.uri.split("/", 3)[3]


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)
    return root


VISIBLE = {
    "labels.tif": b"II*\x00 a label map",
    "stats.csv": b"class,pixels\nwater,3\n",
    "stats.json": b'{"item": "scene"}\n',
    "labels.zarr/zarr.json": b'{"zarr_format": 3}',
    "labels.zarr/0/zarr.json": b'{"shape": [4, 4]}',
    "labels.zarr/0/c/0/0": bytes(range(16)),
    "labels.zarr/0/c/0/1": bytes(range(16, 32)),
}
HIDDEN = {
    ".staging-x/labels.tif": b"half written",
    ".staging-x/labels.zarr/zarr.json": b"{}",
    ".stats.json.abc123": b"a temporary file",
    "labels.zarr/.zattrs.tmp": b"scratch",
}


def _record_uploads(monkeypatch: pytest.MonkeyPatch,
                    on_start: Callable[[str], None] | None = None) -> list[tuple[str, str]]:
    """Record ``("start" | "end", key)`` for every object s3fs uploads, in order (its upload
    coroutine is wrapped; the store is the real server). ``on_start`` runs before each upload."""
    events: list[tuple[str, str]] = []
    original = s3fs.S3FileSystem._put_file

    async def recording(self: Any, lpath: str, rpath: str, *args: Any, **kwargs: Any) -> Any:
        key = rpath.split("/", 1)[1]
        if on_start is not None:
            on_start(key)
        events.append(("start", key))
        result = await original(self, lpath, rpath, *args, **kwargs)
        events.append(("end", key))
        return result

    monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", recording)
    # an empty instance cache: the publisher's filesystem is made now, binding put_file to the
    # wrapper, and is dropped with the test
    monkeypatch.setattr(s3fs.S3FileSystem, "_cache", {})
    return events


# --- locations -----------------------------------------------------------------------------------


def test_the_staging_directory_is_stable_per_uri(tmp_path: Path) -> None:
    a = staging_dir_for("s3://bkt/jobs/a", tmp_path)
    assert a == staging_dir_for("s3://bkt/jobs/a/", tmp_path) and a.parent == tmp_path and not a.exists()
    assert a != staging_dir_for("s3://bkt/jobs/b", tmp_path) and len(a.name) == 16


def test_parsing_an_output_location(tmp_path: Path) -> None:
    remote = OutputLocation.parse("s3://bkt/jobs/run1/", tmp_path)
    assert remote.is_remote and remote.uri == "s3://bkt/jobs/run1"
    assert remote.local_dir == staging_dir_for("s3://bkt/jobs/run1", tmp_path)
    assert remote.uri_for("scene/labels.tif") == "s3://bkt/jobs/run1/scene/labels.tif"
    assert OutputLocation.parse("s3://bkt", tmp_path).uri_for("a.csv") == "s3://bkt/a.csv"
    local = OutputLocation.parse(tmp_path / "out", tmp_path / "cache")
    assert not local.is_remote and local.local_dir == tmp_path / "out"
    assert local.uri_for("summary.csv") == str(tmp_path / "out" / "summary.csv")
    assert OutputLocation.parse(f"file://{tmp_path}/out", tmp_path).local_dir == tmp_path / "out"
    with pytest.raises(ValueError, match="gs://b/out: unsupported URI scheme gs://; use a local path or s3://"):
        OutputLocation.parse("gs://b/out", tmp_path)
    with pytest.raises(ValueError, match="'B_' is not a bucket name"):
        OutputLocation.parse("s3://B_/out", tmp_path)
    with pytest.raises(ValueError, match=r"expected a relative path .*, got '\.\./x'"):
        remote.uri_for("../x")
    with pytest.raises(ValueError, match="a Publisher needs an s3:// output location"):
        Publisher(local, S3Config())


# --- publishing ----------------------------------------------------------------------------------


def test_an_item_folder_is_published_file_by_file_without_hidden_names(publisher: Publisher, endpoint: str,
                                                                       tmp_path: Path) -> None:
    item_dir = _write(tmp_path / "scene", {**VISIBLE, **HIDDEN})
    uris = publisher.publish_item(item_dir, "scene")
    prefix = _prefix(publisher)
    assert _objects(endpoint, f"{prefix}/scene") == VISIBLE  # the same bytes, nothing hidden
    assert sorted(uris) == sorted(f"s3://{BUCKET}/{prefix}/scene/{rel}" for rel in VISIBLE)
    assert uris[-1].endswith("/scene/stats.json")


def test_stats_json_is_uploaded_after_every_other_file(publisher: Publisher, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    chunks = {f"labels.zarr/0/c/{i}/{j}": bytes([i, j]) * 64 for i in range(4) for j in range(4)}
    files = {**VISIBLE, **chunks}
    item_dir = _write(tmp_path / "scene", files)
    events = _record_uploads(monkeypatch)
    publisher.publish_item(item_dir, "scene")
    stats = f"{_prefix(publisher)}/scene/stats.json"
    starts = [k for e, k in events if e == "start"]
    assert len(starts) == len(files) and starts.count(stats) == 1
    assert len({k for e, k in events if e == "start"}) == len(starts)  # each object once
    begin = events.index(("start", stats))
    assert sorted(k for e, k in events[:begin] if e == "end") == sorted(k for k in starts if k != stats)


def test_publishing_again_replaces_folders_and_hides_the_old_stats_first(publisher: Publisher, endpoint: str,
                                                                         tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    first = _write(tmp_path / "first", {**VISIBLE, "labels.zarr/0/c/9/9": b"old chunk", "logits.tif": b"old"})
    publisher.publish_item(first, "scene")
    prefix = _prefix(publisher)
    s3 = _client(endpoint)
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/scene/labels.zarr/.keep", Body=b"not ours to delete")

    seen_stats: list[bool] = []

    def stats_present(key: str) -> None:
        if not key.endswith("stats.json"):
            listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/scene/stats.json")
            seen_stats.append(listed.get("KeyCount", 0) > 0)

    second = _write(tmp_path / "second", {**VISIBLE, "stats.json": b'{"item": "scene", "run": 2}\n'})
    _record_uploads(monkeypatch, stats_present)
    publisher.publish_item(second, "scene")
    assert seen_stats and not any(seen_stats)  # no reader took the half-replaced item for complete
    assert _objects(endpoint, f"{prefix}/scene") == {
        **VISIBLE, "stats.json": b'{"item": "scene", "run": 2}\n',
        "logits.tif": b"old",  # a file of the item folder is overwritten, never deleted
        "labels.zarr/.keep": b"not ours to delete",  # hidden names are left alone
    }  # the stale chunk labels.zarr/0/c/9/9 is gone


def test_job_files_up_and_down(publisher: Publisher, endpoint: str, tmp_path: Path) -> None:
    ledger = tmp_path / "staging" / "ledger.sqlite"
    _write(tmp_path / "staging", {"ledger.sqlite": b"SQLite format 3\x00" + bytes(200), "summary.csv": b"item\n"})
    assert publisher.publish_file(ledger, "ledger.sqlite") == f"{publisher.location.uri}/ledger.sqlite"
    publisher.publish_file(tmp_path / "staging" / "summary.csv", "reports/summary.csv")
    assert _objects(endpoint, _prefix(publisher)) == {"ledger.sqlite": ledger.read_bytes(),
                                                      "reports/summary.csv": b"item\n"}

    back = tmp_path / "rerun" / "ledger.sqlite"
    assert publisher.fetch_file("ledger.sqlite", back) is True
    assert back.read_bytes() == ledger.read_bytes()
    assert publisher.fetch_file("no-such.sqlite", tmp_path / "rerun" / "other.sqlite") is False
    assert sorted(p.name for p in back.parent.iterdir()) == ["ledger.sqlite"]  # no partial file
    with pytest.raises(SinkError, match=r"/missing\.csv: cannot upload .*missing\.csv: not a file"):
        publisher.publish_file(tmp_path / "missing.csv", "missing.csv")


def test_recorded_outputs_exist(publisher: Publisher, tmp_path: Path) -> None:
    uris = publisher.publish_item(_write(tmp_path / "scene", VISIBLE), "scene")
    assert all(publisher.exists(u) for u in uris)
    assert publisher.exists(publisher.location.uri_for("scene/labels.zarr"))  # a folder
    assert not publisher.exists(publisher.location.uri_for("scene/gone.tif"))
    assert not publisher.exists(publisher.location.uri_for("other/labels.tif"))


def test_the_write_check_leaves_nothing(publisher: Publisher, endpoint: str) -> None:
    publisher.check_writable()
    assert MARKER_NAME not in _objects(endpoint, _prefix(publisher))


# --- failures ------------------------------------------------------------------------------------


def _assert_one_line_naming(exc: pytest.ExceptionInfo[SinkError], uri: str, problem: str) -> None:
    text = str(exc.value)
    assert text.startswith(uri) and problem in text and "\n" not in text, text


def _every_call(pub: Publisher, tmp_path: Path) -> list[tuple[Callable[[], object], str]]:
    item_dir = _write(tmp_path / "scene", VISIBLE)
    (tmp_path / "summary.csv").write_text("item\n")
    uri = pub.location.uri
    return [
        (pub.check_writable, uri),
        (lambda: pub.publish_item(item_dir, "scene"), f"{uri}/scene"),
        (lambda: pub.publish_file(tmp_path / "summary.csv", "summary.csv"), f"{uri}/summary.csv"),
        (lambda: pub.fetch_file("ledger.sqlite", tmp_path / "ledger.sqlite"), f"{uri}/ledger.sqlite"),
        (lambda: pub.exists(f"{uri}/scene/stats.json"), f"{uri}/scene/stats.json"),
    ]


def test_an_unreachable_endpoint_fails_within_seconds_naming_the_uri(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    dead = _config(f"http://127.0.0.1:{free_port()}", ("k", "s"))
    location = OutputLocation.parse(f"s3://{BUCKET}/out", tmp_path / "cache")
    started = time.monotonic()
    with pytest.raises(SinkError) as info:
        Publisher(location, dead).check_writable()  # the pre-flight, with the default retries
    assert time.monotonic() - started < 8.0
    _assert_one_line_naming(info, location.uri, "cannot write: cannot reach http://127.0.0.1:")
    once = Publisher(location, replace(dead, max_attempts=1))  # the rest without retries, to keep the test fast
    for call, uri in _every_call(once, tmp_path):
        with pytest.raises(SinkError) as info:
            call()
        _assert_one_line_naming(info, uri, "cannot reach http://127.0.0.1:")
        assert "AWS_ENDPOINT_URL" in str(info.value)
    assert not (tmp_path / "ledger.sqlite").exists()


def test_a_missing_bucket(endpoint: str, tmp_path: Path) -> None:
    pub = Publisher(OutputLocation.parse("s3://no-such-bucket/out", tmp_path / "cache"), _config(endpoint))
    for call, uri in _every_call(pub, tmp_path):
        with pytest.raises(SinkError) as info:
            call()
        _assert_one_line_naming(info, uri, f"bucket 'no-such-bucket' does not exist at {endpoint}")


@pytest.fixture()
def read_only_user(endpoint: str, bucket: str) -> Iterator[S3Config]:
    """An IAM user that may list the bucket and read objects, not write them, with moto enforcing
    IAM (in-process: the threaded server shares moto's settings)."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    iam = _client(endpoint, "iam")
    name = f"reader-{time.monotonic_ns()}"
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="read-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": f"arn:aws:s3:::{bucket}"},
                      {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": f"arn:aws:s3:::{bucket}/*"}],
    }))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    previous = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    try:
        yield _config(endpoint, (key["AccessKeyId"], key["SecretAccessKey"]))
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = previous


def test_access_denied(publisher: Publisher, read_only_user: S3Config, tmp_path: Path) -> None:
    reader = Publisher(publisher.location, read_only_user)
    assert reader.fetch_file("ledger.sqlite", tmp_path / "ledger.sqlite") is False  # reading is allowed
    calls = _every_call(reader, tmp_path)
    for call, uri in calls[:3]:  # the writes
        with pytest.raises(SinkError) as info:
            call()
        _assert_one_line_naming(info, uri, "access denied")
        assert "check the credentials" in str(info.value)
    stranger = Publisher(publisher.location, _config(publisher.config.endpoint_url or "", ("nobody", "x")))
    with pytest.raises(SinkError) as info:
        stranger.check_writable()
    _assert_one_line_naming(info, publisher.location.uri, "cannot write: access denied")


