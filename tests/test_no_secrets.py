"""No secret in any output (issue 16 item 6): planted secrets, jobs that fail some items, and every
file they write, the ledger, the logs and the printed report searched for the planted values:
S3 credentials (``s3://`` inputs and outputs), DICOMweb credentials (a real Orthanc behind a
proxy that fails some requests, so that retries are logged too) and the Ray cluster's token (a
real ``ray start`` cluster, jobs submitted, listed and their logs read)."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path

import boto3
import numpy as np
import pytest
import torch
import yaml
from dicom_files import HuBands, ct_phantom, orthonormal_affine, write_series
from flaky_s3 import FlakyS3Proxy
from orthanc_server import orthanc, upload
from ray_nodes import BIN, Cluster

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


def _texts(root: Path) -> dict[str, str]:
    """Every file under ``root``, as text (bytes that are not text kept as latin-1)."""
    return {str(p): p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning")
def test_planted_dicomweb_credentials_appear_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = "Planted-PACS-Passw0rd!x7"
    stow_password = "Planted-STOW-Passw0rd!y8"
    with orthanc(tmp_path / "orthanc", user="planted-user", password=password) as pacs, \
            FlakyS3Proxy(pacs.url) as proxy:
        ok = write_series(tmp_path / "src" / "a", ct_phantom((32, 32, 8), 1), orthonormal_affine((1, 1, 2)),
                          slope=2.0, intercept=-1024.0, modality="CT")
        gap = write_series(tmp_path / "src" / "b", ct_phantom((32, 32, 8), 2), orthonormal_affine((1, 1, 2)),
                           modality="CT")
        gap[3].unlink()  # this series fails: missing slices
        upload(pacs, ok)
        upload(pacs, [p for p in gap if p.exists()])
        monkeypatch.setenv("GEOSEG_DICOMWEB_USER", pacs.user)
        monkeypatch.setenv("GEOSEG_DICOMWEB_PASSWORD", password)
        stow = tmp_path / "stow.json"  # STOW-RS with its own (wrong) credentials: refused, the item fails
        stow.write_text(json.dumps({"user": pacs.user, "password": stow_password}))
        model = tmp_path / "bands.pt"
        torch.jit.script(HuBands()).save(str(model))
        root = f"{proxy.url}/dicom-web"
        wf = tmp_path / "wf.yaml"
        wf.write_text(yaml.safe_dump({
            "inputs": {"dicomweb": {"url": root, "query": {"Modality": "CT"}}},
            "model": {"type": "torchscript", "path": str(model)},
            "classes": [{"name": "background"}, {"name": "organ"}, {"name": "lesion"}],
            "tiling": {"roi_size": [16, 16, 8], "block_size": 16},
            "output": {"directory": str(tmp_path / "out"), "formats": ["nifti", "dicom-seg"],
                       "dicomweb": {"url": root, "credentials_file": str(stow)}},
            "resources": {"workers": 1, "backend": "local"},
        }))
        proxy.fail_fraction(0.2, "/dicom-web/", seed=8)  # retries, and their log lines
        caplog.set_level(logging.INFO)
        assert main(["--no-progress", "run", str(wf)]) == 1
    printed = capsys.readouterr()
    texts = {"stdout": printed.out, "stderr": printed.err, "log": caplog.text, **_texts(tmp_path / "out")}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["items_failed"] == 2 and any("STOW-RS" in (i["error"] or "") for i in summary["items"])
    assert "try 2 of" in caplog.text  # a retry was logged
    for where, text in texts.items():
        for secret in (password, stow_password):
            assert secret not in text, f"{secret!r} found in {where}"


@pytest.mark.slow
def test_the_ray_token_appears_nowhere(tmp_path: Path, write_raster: Callable[..., Path],
                                       conv_model: Callable[..., Path]) -> None:
    scene = write_raster("scene.tif", np.random.default_rng(0).integers(1, 255, (3, 40, 50)).astype("uint8"))
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff at all")
    wf = tmp_path / "wf.yaml"
    wf.write_text(yaml.safe_dump({
        "inputs": {"paths": [str(scene), str(broken)]},
        "model": {"type": "torchscript", "path": str(conv_model())},
        "tiling": {"roi_size": 32, "block_size": 64},
        "output": {"directory": str(tmp_path / "out")},
        "resources": {"workers": 1, "cpus_per_worker": 1},
    }))
    texts: dict[str, str] = {}
    (tmp_path / "cluster").mkdir()
    with Cluster(tmp_path / "cluster", head_cpus=1, dashboard=True) as cluster:
        token = Path(cluster.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()

        def geoseg(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
            done = subprocess.run([str(BIN / "geoseg"), *args], capture_output=True, text=True,
                                  env=env or cluster.env, timeout=600)
            texts[f"geoseg {' '.join(args)}: stdout"] = done.stdout
            texts[f"geoseg {' '.join(args)}: stderr"] = done.stderr
            return done

        sub = geoseg("submit", str(wf), "--address", cluster.dashboard, "--wait")
        assert "1 item(s) done, 1 failed" in sub.stdout, sub.stdout + sub.stderr
        job_id = sub.stdout.split()[1]
        geoseg("jobs", "--address", cluster.dashboard)
        geoseg("logs", job_id, "--address", cluster.dashboard)
        direct = geoseg("--no-progress", "run", str(wf), "--address", cluster.address, "--force")
        assert "broken.tif" in direct.stderr + direct.stdout
        refused = geoseg("submit", str(wf), "--address", cluster.dashboard,
                         env={**cluster.env, "RAY_AUTH_TOKEN": "wrong-token-value"})
        assert refused.returncode != 0
    texts.update(_texts(tmp_path / "out"))
    assert any("broken.tif" in t for t in texts.values())
    for where, text in texts.items():
        assert token not in text, f"the Ray token found in {where}"
