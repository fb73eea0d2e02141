"""``geoseg`` with an ``s3://`` output directory (a real S3-compatible server on loopback): the
command prints the locations as given, ``s3://bucket/prefix/...``, never a local path made of the
URI (``s3:/bucket/...``), and ``predict --out s3://...`` writes to the store (``geoseg status``
of a local folder: tests/test_cli_status.py; of an ``s3://`` location: here)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import yaml

from geoseg_pipeline.cli import main

pytestmark = pytest.mark.usefixtures("clean_aws_environment")

BUCKET = "cli-results"


@pytest.fixture()
def store(endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The bucket (an S3 client on it); the AWS settings in the environment; the test's folder
    as working directory and home (where the default staging folder is)."""
    for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    yield client


def _keys(client: Any, prefix: str) -> set[str]:
    return {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])}


def _scene(write_raster: Callable[..., Path]) -> Path:
    return write_raster("scene.tif", np.random.default_rng(0).integers(1, 255, (3, 40, 50)).astype("uint8"))


@pytest.fixture()
def workflow(store: Any, tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path]) -> Path:
    """A one-item workflow whose outputs go to ``s3://BUCKET/nightly``."""
    wf = tmp_path / "wf.yaml"
    wf.write_text(yaml.safe_dump({
        "inputs": {"paths": [str(_scene(write_raster))]},
        "model": {"type": "torchscript", "path": str(conv_model())},
        "tiling": {"roi_size": 32, "block_size": 64},
        "output": {"directory": f"s3://{BUCKET}/nightly/", "staging": str(tmp_path / "staging")},
        "resources": {"workers": 1, "backend": "local"},
    }))
    return wf


def test_validate_prints_the_output_uri(workflow: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(workflow)]) == 0
    assert f"output s3://{BUCKET}/nightly)" in capsys.readouterr().out  # not the staging folder


def test_run_prints_the_uris_of_items_and_summary(
    workflow: Path, store: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"s3://{BUCKET}/nightly"
    assert main(["--no-progress", "run", str(workflow)]) == 0
    printed = capsys.readouterr().out
    assert f"  scene: {uri}/scene/\n" in printed
    assert f"summary: {uri}/summary.csv\n" in printed
    assert "s3:/" + BUCKET not in printed and str(tmp_path / "staging") not in printed
    assert {"nightly/scene/labels.tif", "nightly/summary.csv"} <= _keys(store, "nightly/")


def test_predict_writes_to_the_store_and_prints_the_uri(
    store: Any, tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri = f"s3://{BUCKET}/adhoc"
    argv = ["--no-progress", "predict", str(_scene(write_raster)), "--model", str(conv_model()), "--out", uri,
            "--roi-size", "32", "--workers", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"  scene: {uri}/scene/\n" in printed and f"summary: {uri}/summary.csv\n" in printed
    assert {"adhoc/scene/labels.tif", "adhoc/summary.csv"} <= _keys(store, "adhoc/")
    assert not (tmp_path / "s3:").exists()  # not a local folder named after the URI


def test_status_of_a_location_reads_the_ledger_its_run_published(
    workflow: Path, store: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = f"s3://{BUCKET}/never-run/"
    assert main(["-q", "status", empty]) == 1  # nothing there: the reason
    err = capsys.readouterr().err
    assert err == f"{empty}: no run ledger (ledger.sqlite) there: no geoseg run has published to this location\n"
    uri = f"s3://{BUCKET}/nightly/"
    assert main(["--no-progress", "run", str(workflow)]) == 0
    capsys.readouterr()
    assert main(["-q", "status", uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"s3://{BUCKET}/nightly/ledger.sqlite: as the last run published it (at its end)"
    assert lines[2].split()[:2] == ["scene", "ok"]
    assert lines[-1].startswith("1 item(s): 1 ok, 0 failed, 0 running")
    assert not list(tmp_path.glob("**/geoseg-status-*"))  # the fetched copy is gone


def test_status_of_an_unreachable_store_names_the_location(
    store: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    assert main(["-q", "status", f"s3://{BUCKET}/nightly"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"s3://{BUCKET}/nightly: cannot read its run ledger: s3://{BUCKET}/nightly/ledger.sqlite")
