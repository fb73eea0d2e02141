"""Whole jobs against an object store that misbehaves: a fault-injecting proxy on loopback in front
of the real S3 server answers a share of every request (reads, listings, uploads) with 500, 503
SlowDown or a dropped connection. The job completes with every item ok and outputs equal to a
calm run's, the retries counted in ``summary.json``; an endpoint that stays down fails what it
touches with its reason, in bounded time."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from flaky_s3 import FlakyS3Proxy

from geoseg_pipeline.api import run_workflow
from geoseg_pipeline.errors import JobError
from geoseg_pipeline.spec import parse_workflow

pytestmark = [pytest.mark.usefixtures("clean_aws_environment"), pytest.mark.slow]

BUCKET = "flaky"


@pytest.fixture(scope="module")
def proxy(endpoint: str) -> Iterator[FlakyS3Proxy]:
    with FlakyS3Proxy(endpoint) as p:
        yield p


@pytest.fixture()
def inputs(s3_env: Any, write_raster: Callable[..., Path], request: pytest.FixtureRequest) -> list[str]:
    """Three scenes uploaded to ``s3://flaky/<test>/inputs/`` (a prefix per test: GDAL caches what
    it read of an object for the process)."""
    prefix = f"{request.node.name[:40]}/inputs"
    rng = np.random.default_rng(5)
    uris = []
    for i, shape in enumerate([(150, 170), (96, 96), (130, 64)]):
        path = write_raster(f"scene{i}.tif", rng.integers(1, 255, (3, *shape)).astype("uint8"))
        s3_env.upload_file(str(path), BUCKET, f"{prefix}/{path.name}")
        uris.append(f"s3://{BUCKET}/{prefix}/{path.name}")
    return uris


def _run(tmp: Path, inputs: list[str], model: Path, out: str) -> Any:
    spec = parse_workflow({
        "inputs": {"paths": inputs},
        "model": {"type": "torchscript", "path": str(model)},
        "tiling": {"roi_size": 32, "block_size": 64},
        "output": {"directory": out, "staging": str(tmp / "staging" / out.rsplit("/", 1)[-1])},
        "resources": {"workers": 1, "backend": "local"},
    }, tmp)
    return spec, run_workflow(spec, progress=False)


@contextlib.contextmanager
def _down(proxy: FlakyS3Proxy, pattern: str, drop_share: float, within_s: float) -> Iterator[None]:
    """Every request matching ``pattern`` fails meanwhile; what runs inside must end within ``within_s``."""
    proxy.clear()
    proxy.fail_fraction(1.0, pattern, drop_share=drop_share, seed=3)
    started = time.monotonic()
    try:
        yield
    finally:
        proxy.stop_failing()
    assert time.monotonic() - started < within_s


def _labels(s3: Any, key: str) -> np.ndarray:
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with rasterio.MemoryFile(body) as mem, mem.open() as ds:
        return ds.read(1)


def test_a_flaky_store_costs_no_item_and_the_retries_are_counted(
    tmp_path: Path, s3_env: Any, proxy: FlakyS3Proxy, inputs: list[str], conv_model: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = conv_model()
    _, calm = _run(tmp_path, inputs, model, f"s3://{BUCKET}/calm")
    assert calm.ok, calm.outcomes

    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    proxy.clear()
    # one item's map is refused twice on upload, whatever share of the random faults lands on
    # the uploads (the request order, and so the seeded faults, varies from run to run)
    proxy.fail_next(2, rf"/{BUCKET}/stormy/scene1/labels\.tif", method="PUT")
    proxy.fail_fraction(0.2, seed=11)
    try:
        spec, stormy = _run(tmp_path, inputs, model, f"s3://{BUCKET}/stormy")
    finally:
        proxy.stop_failing()
    assert stormy.ok, stormy.outcomes
    assert proxy.injected >= 10  # the weather was bad
    assert {s.method for s in proxy.seen if s.status in (0, 500, 503)} >= {"GET", "PUT"}  # reads and uploads hit
    assert sum(s.method == "PUT" and "stormy/scene1/labels.tif" in s.path and s.status == 503 for s in proxy.seen) >= 2

    summary = json.loads((spec.output.directory / "summary.json").read_text(encoding="utf-8"))
    retries = summary["retries"]
    assert retries["read"] > 0 and retries["upload"] > 0, retries
    per_item = [i["retries"] for i in summary["items"]]
    assert sum(r.get("read", 0) for r in per_item) == retries["read"]
    for i in range(3):
        stormy_labels = _labels(s3_env, f"stormy/scene{i}/labels.tif")
        assert np.array_equal(stormy_labels, _labels(s3_env, f"calm/scene{i}/labels.tif"))


def test_an_object_that_stays_unreachable_fails_its_item_with_the_reason_in_bounded_time(
    tmp_path: Path, s3_env: Any, proxy: FlakyS3Proxy, inputs: list[str], conv_model: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    with _down(proxy, r"/inputs/scene1\.tif", drop_share=0.0, within_s=120):  # bounded: retries end, no hang
        _, result = _run(tmp_path, inputs, conv_model(), f"s3://{BUCKET}/partly")
    status = {o.item: o for o in result.outcomes}
    assert status["scene0"].status == "ok" and status["scene2"].status == "ok"
    assert status["scene1"].status == "failed"
    error = status["scene1"].error
    # the endpoint's reason: its status, or its own message, as GDAL reports the last try
    assert "scene1.tif" in error and ("HTTP response code: 50" in error or "injected by the test proxy" in error), error
    assert "scene1.tif: open failed" in caplog.text and "try 4 of 4" in caplog.text  # retried, then given up


def test_an_output_store_that_stays_down_fails_the_job_before_any_work_in_bounded_time(
    tmp_path: Path, s3_env: Any, proxy: FlakyS3Proxy, inputs: list[str], conv_model: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    with _down(proxy, r"/flaky/down", drop_share=0.5, within_s=60), \
            pytest.raises(JobError, match=r"s3://flaky/down.*cannot write"):
        _run(tmp_path, inputs, conv_model(), f"s3://{BUCKET}/down")
    assert not [s for s in proxy.seen if "/inputs/" in s.path and s.method == "GET" and s.range]  # no pixel read
