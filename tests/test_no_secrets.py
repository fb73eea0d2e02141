"""No secret in any output (issue 16 item 6, the object-store part): a job with ``s3://`` inputs and
outputs, planted credentials in the environment, an item that fails and one that cannot be reached;
every file it writes (locally and in the bucket), the ledger, the logs and the printed report are
searched for the planted values."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import boto3
import numpy as np
import pytest
import yaml

from geoseg_pipeline.cli import main

pytestmark = pytest.mark.usefixtures("clean_aws_environment")

BUCKET = "secrets-test"
KEY_ID = "AKIAPLANTED7KEYID42"
SECRET = "planted/Secret+Value=9f8e7d6c5b4a"
TOKEN = "PlantedSessionToken//abc123=="


def test_planted_credentials_appear_nowhere(endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            write_raster: Callable[..., Path], conv_model: Callable[..., Path],
                                            capsys: pytest.CaptureFixture[str],
                                            caplog: pytest.LogCaptureFixture) -> None:
    for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
                        "AWS_SESSION_TOKEN": TOKEN, "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME", str(tmp_path))
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                          aws_session_token=TOKEN, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    scene = write_raster("scene.tif", np.random.default_rng(0).integers(1, 255, (3, 40, 50)).astype("uint8"))
    client.upload_file(str(scene), BUCKET, "in/scene.tif")
    client.put_object(Bucket=BUCKET, Key="in/broken.tif", Body=b"not a tiff at all")
    wf = tmp_path / "wf.yaml"
    wf.write_text(yaml.safe_dump({
        "inputs": {"paths": [f"s3://{BUCKET}/in/*.tif", f"s3://{BUCKET}/in/missing.tif"]},
        "model": {"type": "torchscript", "path": str(conv_model())},
        "tiling": {"roi_size": 32, "block_size": 64},
        "output": {"directory": f"s3://{BUCKET}/out/", "staging": str(tmp_path / "staging")},
        "resources": {"workers": 1, "backend": "local"},
    }))
    caplog.set_level(logging.INFO)  # what the command shows; DEBUG is botocore's own wire log
    assert main(["--no-progress", "run", str(wf)]) == 1  # broken.tif and missing.tif fail
    printed = capsys.readouterr()
    texts = {"stdout": printed.out, "stderr": printed.err, "log": caplog.text}
    for path in tmp_path.rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("latin-1")
    objects = client.list_objects_v2(Bucket=BUCKET, Prefix="out/")["Contents"]
    assert any(o["Key"].endswith("summary.csv") for o in objects)
    for obj in objects:
        texts[f"s3://{BUCKET}/{obj['Key']}"] = client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read().decode(
            "latin-1")
    assert any("broken.tif" in t for t in texts.values()) and any("missing.tif" in t for t in texts.values())
    for where, text in texts.items():
        for secret in (KEY_ID, SECRET, TOKEN):
            assert secret not in text, f"{secret!r} found in {where}"
