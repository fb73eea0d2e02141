"""What an actor does with the job's storage: it reads object stores with the configuration the
driver was given (never its own environment), it prepares an item for the workers of its
machine (one staged copy, the z-score statistics), and it stages its own copy of an item whose
copy it cannot see (an actor on another node of a cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import boto3
import nibabel as nib
import numpy as np
import pytest
import torch
import zarr

from geoseg_pipeline.errors import SourceError
from geoseg_pipeline.formats import lookup
from geoseg_pipeline.geometry import full_window
from geoseg_pipeline.inference.tile_executor import TileExecutor
from geoseg_pipeline.preprocess import Preprocessing
from geoseg_pipeline.sources import SourceOptions, open_metadata, open_source
from geoseg_pipeline.spec import ModelSpec
from geoseg_pipeline.storage import S3Config
from geoseg_pipeline.tasks import ItemJob
from geoseg_pipeline.tiling import plan_tiles

pytestmark = pytest.mark.usefixtures("clean_aws_environment")

BUCKET = "actor-data"
SHAPE = (13, 11, 6)


class _Identity(torch.nn.Module):
    """Two classes: the input and its negation (so blended logits / weights = the input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, -x], dim=1)


@pytest.fixture(scope="module")
def config(endpoint: str) -> S3Config:
    return S3Config(endpoint_url=endpoint, region="us-east-1", access_key_id="testing", secret_access_key="testing")


@pytest.fixture(scope="module")
def volume(endpoint: str, config: S3Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[np.ndarray]:
    data = np.random.default_rng(5).normal(size=SHAPE).astype(np.float32)
    local = tmp_path_factory.mktemp("upload")
    nib.save(nib.Nifti1Image(data, np.diag([0.9, 0.9, 2.0, 1.0])), local / "ct.nii.gz")
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                      region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    s3.upload_file(str(local / "ct.nii.gz"), BUCKET, "ct.nii.gz")
    store = zarr.open_array(f"s3://{BUCKET}/ct.zarr", mode="w", shape=SHAPE, chunks=(8, 8, 6), dtype="float32",
                            storage_options=config.storage_options())
    store[:] = data
    store.attrs.update(spacing=[0.9, 0.9, 2.0])
    yield data


def _executor(tmp_path: Path, config: S3Config | None) -> TileExecutor:
    model = tmp_path / "identity.pt"
    torch.jit.script(_Identity()).save(str(model))
    return TileExecutor(ModelSpec(type="torchscript", path=model), device="cpu", threads=1, s3=config)


def _run(executor: TileExecutor, job: ItemJob) -> np.ndarray:
    """Every task of the item; the blend of class 0 (= the input) over the whole volume."""
    logits, weights = np.zeros(SHAPE, np.float32), np.zeros(SHAPE, np.float32)
    for task in plan_tiles(SHAPE, job.roi_size, 0.25, (8, 8, 8)).tasks():
        result = executor.run(job, task)
        logits[result.region.slices()] += result.logits[0]
        weights[result.region.slices()] += result.weights
    return logits / weights


def _job(path: str, fmt: str, data_path: str | None = None) -> ItemJob:
    return ItemJob("ct", path, fmt, Preprocessing((1,)), (8, 8, 4), "constant", 0.125, 4, kind="volume",
                   data_path=data_path, image_shape=SHAPE)


def test_an_actor_stages_its_own_copy_when_the_drivers_is_not_visible(
    volume: np.ndarray, config: S3Config, tmp_path: Path,
) -> None:
    executor = _executor(tmp_path, config)
    # the driver's copy lives in a cache folder on another machine
    job = _job(f"s3://{BUCKET}/ct.nii.gz", "nifti", data_path="/nonexistent/driver-cache/ct.nii")
    np.testing.assert_allclose(_run(executor, job), volume, rtol=1e-5, atol=1e-6)
    staged = executor.reader.staged
    assert len(staged) == 1 and [p.name.endswith("ct.nii") for p in staged[0].iterdir()] == [True]
    executor.release(job.path)
    assert not staged[0].exists()  # its own copy goes with the item
    executor.close()


def test_reading_threads_share_one_staged_copy(volume: np.ndarray, config: S3Config, tmp_path: Path) -> None:
    """Every reading thread opens the item itself; the object is fetched and inflated once."""
    executor = _executor(tmp_path, config)
    job = _job(f"s3://{BUCKET}/ct.nii.gz", "nifti", data_path="/nonexistent/driver-cache/ct.nii")
    with ThreadPoolExecutor(4) as pool:
        sources = list(pool.map(lambda _: executor.reader.source(job), range(4)))
    assert len({id(s) for s in sources}) == 4  # one reader per thread ...
    [folder] = executor.reader.staged
    [copy] = folder.iterdir()
    made = copy.stat().st_mtime_ns
    executor.reader.source(job)  # ... and opening again reuses the copy
    assert [p.name for p in folder.iterdir()] == [copy.name] and copy.stat().st_mtime_ns == made
    executor.close()
    assert not folder.exists()


def test_zarr_in_an_actor_uses_the_drivers_configuration(
    volume: np.ndarray, config: S3Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the actor's own environment points at a dead endpoint: only the given configuration works
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wrong")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    uri = f"s3://{BUCKET}/ct.zarr"
    src = open_source(lookup("zarr", "volume"), uri, SourceOptions(s3=config))
    np.testing.assert_array_equal(src.read(full_window(SHAPE))[0], volume)
    src.close()
    executor = _executor(tmp_path, config)
    np.testing.assert_allclose(_run(executor, _job(uri, "zarr")), volume, rtol=1e-5, atol=1e-6)
    executor.close()
    with pytest.raises(SourceError, match="without an object-store configuration"):
        open_source(lookup("zarr", "volume"), uri, SourceOptions(s3=None))


def test_a_worker_prepares_an_item_once_for_every_worker_of_its_machine(
    volume: np.ndarray, config: S3Config, tmp_path: Path,
) -> None:
    """prepare_item fetches and inflates the object once and computes MONAI's nonzero z-score
    statistics; another worker on the machine, given the prepared job, reads that copy."""
    from monai.transforms import NormalizeIntensity

    first, second = _executor(tmp_path, config), _executor(tmp_path, config)
    job = replace(_job(f"s3://{BUCKET}/ct.nii.gz", "nifti"), staged=True, zscore_nonzero=True)
    facts = first.prepare_item(job)
    [folder] = first.reader.staged
    assert facts.data_path is not None and Path(facts.data_path).parent == folder
    expected = NormalizeIntensity(nonzero=True)(torch.from_numpy(volume[None].copy())).numpy()[0]  # in place
    assert facts.mean is not None and facts.std is not None
    nonzero = volume != 0
    np.testing.assert_allclose((volume[nonzero] - facts.mean[0]) / facts.std[0], expected[nonzero], rtol=1e-4,
                               atol=1e-4)
    prepared = job.prepared(facts)
    assert prepared.preprocessing.nonzero_only and not prepared.needs_preparation
    np.testing.assert_allclose(_run(second, prepared), expected, rtol=1e-4, atol=1e-4)  # z-scored input
    assert second.reader.staged == []  # no copy of its own
    first.close()
    second.close()
    assert not folder.exists()


def test_the_driver_reads_an_objects_header_without_its_voxels(volume: np.ndarray, config: S3Config) -> None:
    src = open_metadata(lookup("nifti", "volume"), f"s3://{BUCKET}/ct.nii.gz", SourceOptions(s3=config))
    assert src.grid.shape == SHAPE and np.allclose(src.grid.zooms, (0.9, 0.9, 2.0))
    with pytest.raises(SourceError, match="header only"):
        src.read(full_window(SHAPE))
