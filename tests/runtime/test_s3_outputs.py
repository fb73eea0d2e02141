"""Jobs whose output directory is ``s3://``, against a real S3-compatible server on loopback:
items published as they finish, the summary and ledger at the end, a re-run from a machine
without the staging folder skips finished items, and an unwritable store fails before any work."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from geoseg_pipeline.api import run_workflow
from geoseg_pipeline.errors import JobError
from geoseg_pipeline.spec import parse_workflow
from geoseg_pipeline.storage import S3Config, gdal_path

pytestmark = pytest.mark.usefixtures("clean_aws_environment")

BUCKET = "results"




def _spec(tmp: Path, inputs: list[Path], model: Path, out: str) -> Any:
    return parse_workflow({
        "inputs": {"paths": [str(p) for p in inputs]},
        "model": {"type": "torchscript", "path": str(model)},
        "tiling": {"roi_size": 32, "block_size": 64},
        "output": {"directory": out, "staging": str(tmp / "staging")},
        "resources": {"workers": 1, "backend": "local"},
    }, tmp)


def test_outputs_are_published_and_a_rerun_elsewhere_skips_finished_items(
    tmp_path: Path, s3_env: Any, write_raster: Callable[..., Path], conv_model: Callable[..., Path]
) -> None:
    rng = np.random.default_rng(0)
    scenes = [write_raster(f"s{i}.tif", rng.integers(1, 255, (3, 80, 90)).astype("uint8")) for i in range(2)]
    model = conv_model()
    spec = _spec(tmp_path, scenes, model, f"s3://{BUCKET}/nightly/")
    assert spec.output.remote == f"s3://{BUCKET}/nightly"

    result = run_workflow(spec, progress=False)
    assert result.ok, result.outcomes
    keys = {o["Key"] for o in s3_env.list_objects_v2(Bucket=BUCKET, Prefix="nightly/")["Contents"]}
    for s in ("s0", "s1"):
        assert {f"nightly/{s}/labels.tif", f"nightly/{s}/stats.json", f"nightly/{s}/stats.csv"} <= keys
        assert result.outcomes[[o.item for o in result.outcomes].index(s)].outputs[0].startswith("s3://")
    assert {"nightly/summary.json", "nightly/summary.csv", "nightly/ledger.sqlite"} <= keys
    assert not [k for k in keys if "/." in k]  # no staging, scratch, journal or lock file
    # the published label map is the staged one, and opens through GDAL's /vsis3/
    body = s3_env.get_object(Bucket=BUCKET, Key="nightly/s0/labels.tif")["Body"].read()
    assert body == (spec.output.directory / "s0" / "labels.tif").read_bytes()
    with S3Config.from_env().rasterio_env(), rasterio.open(gdal_path(f"s3://{BUCKET}/nightly/s0/labels.tif")) as ds:
        assert ds.shape == (80, 90)

    # another machine: no staging folder; the ledger comes from the store
    shutil.rmtree(tmp_path / "staging")
    again = run_workflow(spec, progress=False)
    assert [o.status for o in again.outcomes] == ["skipped", "skipped"]
    summary = json.loads(s3_env.get_object(Bucket=BUCKET, Key="nightly/summary.json")["Body"].read())
    assert summary["items_skipped"] == 2 and summary["run_id"] == json.loads(
        (spec.output.directory / "summary.json").read_text())["run_id"]

    # an output deleted from the store is produced again
    s3_env.delete_object(Bucket=BUCKET, Key="nightly/s1/labels.tif")
    third = run_workflow(spec, progress=False)
    assert {o.item: o.status for o in third.outcomes} == {"s0": "skipped", "s1": "ok"}


def test_an_unwritable_store_fails_before_any_work(
    tmp_path: Path, s3_env: Any, write_raster: Callable[..., Path], conv_model: Callable[..., Path]
) -> None:
    scene = write_raster("s.tif", np.ones((3, 40, 40), "uint8"))
    spec = _spec(tmp_path, [scene], conv_model(), "s3://no-such-bucket/out")
    with pytest.raises(JobError, match=r"cannot write the outputs: s3://no-such-bucket.*does not exist"):
        run_workflow(spec, progress=False)
    assert not (spec.output.directory / "s").exists()


def test_an_unknown_output_scheme_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="local path or s3://bucket/prefix"):
        parse_workflow({"inputs": {"paths": ["x.tif"]}, "model": {"type": "builtin", "name": "landcover-demo"},
                        "output": {"directory": "gs://bucket/out"}}, tmp_path)
