"""Actors that cannot be placed fail the job with a clear message instead of waiting forever
(``resources.placement_timeout_s``), on a real local Ray of 2 CPUs and no GPU."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import yaml

from geoseg_pipeline.api import run_workflow
from geoseg_pipeline.cli import main
from geoseg_pipeline.errors import JobError
from geoseg_pipeline.spec import parse_workflow

pytestmark = pytest.mark.usefixtures("ray_local")


def _workflow(tmp: Path, write_raster: Callable[..., Path], model: Path, **resources: object) -> dict[str, Any]:
    scenes = [write_raster(f"s{i}.tif", np.random.default_rng(i).integers(1, 255, (3, 70, 90)).astype("uint8"))
              for i in range(2)]
    return {
        "inputs": {"paths": [str(s) for s in scenes]},
        "model": {"type": "torchscript", "path": str(model)},
        "tiling": {"roi_size": 64, "block_size": 64},
        "output": {"directory": str(tmp / "out")},
        "resources": {"backend": "ray", **resources},
    }


def test_gpus_on_a_ray_without_gpus_fail_at_once_with_the_setting_to_change(
    tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    wf = _workflow(tmp_path, write_raster, conv_model(), gpus_per_worker=1)
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(wf))
    started = time.monotonic()
    status = main(["--no-progress", "run", str(tmp_path / "wf.yaml")])
    assert time.monotonic() - started < 30  # no placement_timeout_s (120 s) wait
    err = capsys.readouterr().err
    assert status == 1
    line = next(x for x in err.splitlines() if x.startswith("geoseg: "))
    assert "cannot place 1 inference actor(s)" in line
    assert "1 CPU and 1 GPU" in line and "no GPU" in line and "2 CPUs and 0 GPUs in total" in line
    assert "resources.gpus_per_worker: 0" in line
    assert "Traceback" not in err


def test_an_actor_bigger_than_every_node_fails_at_once(
    tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path]
) -> None:
    wf = _workflow(tmp_path, write_raster, conv_model(), cpus_per_worker=8, workers=1, placement_timeout_s=3)
    started = time.monotonic()
    with pytest.raises(JobError) as info:
        run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert time.monotonic() - started < 3  # known before any actor starts: no wait at all
    message = str(info.value)
    assert "\n" not in message
    assert "each asks for 8 CPUs and 0 GPUs" in message and "2 CPUs and 0 GPUs in total" in message
    assert "resources.cpus_per_worker" in message


def test_more_actors_than_the_nodes_hold_fail_at_once(
    tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path]
) -> None:
    wf = _workflow(tmp_path, write_raster, conv_model(), cpus_per_worker=1, workers=3)
    with pytest.raises(JobError, match=r"cannot place 3 inference actor\(s\).*hold only 2.*resources.workers to 2"):
        run_workflow(parse_workflow(wf, tmp_path), progress=False)


@ray.remote(num_cpus=2)
class _Hog:
    """Holds both CPUs of the test Ray, as another job would."""

    def ready(self) -> bool:
        return True


@pytest.fixture()
def hog() -> Iterator[Any]:
    """An actor holding both CPUs, placed."""
    actor = _Hog.remote()  # type: ignore[attr-defined]
    assert ray.get(actor.ready.remote(), timeout=120)
    yield actor
    ray.kill(actor)


def test_actors_not_placed_in_time_fail_after_the_timeout_and_are_stopped(
    tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path], hog: Any
) -> None:
    wf = _workflow(tmp_path, write_raster, conv_model(), cpus_per_worker=1, workers=1, placement_timeout_s=3)
    started = time.monotonic()
    with pytest.raises(JobError) as info:
        run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert 3 <= time.monotonic() - started < 30
    message = str(info.value)
    assert "\n" not in message
    assert "1 of 1 inference actor(s) not placed within 3 s (resources.placement_timeout_s)" in message
    assert "each asks for 1 CPU and 0 GPUs" in message
    assert "2 CPUs and 0 GPUs in total, 0 CPUs and 0 GPUs free" in message

    # No actor of the failed job is left waiting for a CPU: once the other job ends, both
    # actors of the next one are placed.
    ray.kill(hog)
    wf["resources"] = {"backend": "ray", "workers": 2, "placement_timeout_s": 60}
    result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert result.ok, result.outcomes
