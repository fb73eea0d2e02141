"""Fault tolerance on a real local Ray: an inference actor SIGKILLed mid-run is restarted and its
tasks re-run; the job completes with outputs identical to an undisturbed run."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pytest
import rasterio
from heavy import heavy_model

from geoseg_pipeline.api import predict

pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.slow]


def _actor_processes() -> list[psutil.Process]:
    """This session's inference actors (the local Ray is started by this process, so its
    workers are our descendants; other Rays on the machine are left alone)."""
    procs = []
    for p in psutil.Process().children(recursive=True):
        try:
            if " ".join(p.cmdline()).startswith("ray::InferenceActor"):
                procs.append(p)
        except psutil.Error:
            continue
    return procs


def test_killed_actor_is_replaced_and_outputs_are_identical(
    tmp_path: Path, write_raster: Callable[..., Path]
) -> None:
    scene = write_raster("scene.tif", np.random.default_rng(0).integers(1, 255, (3, 1024, 1280)).astype("uint8"))
    model = heavy_model(tmp_path / "heavy.pt")

    def job(out: Path) -> object:
        return predict([scene], str(model), out, roi_size=64, overlap=0.5, workers=2, progress=False)

    calm = job(tmp_path / "calm")
    assert calm.ok  # type: ignore[attr-defined]
    time.sleep(2)
    earlier = {p.pid for p in _actor_processes()}  # the calm job's actors, if still exiting

    killed: list[int] = []

    def kill_one() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            busy = [p for p in _actor_processes()
                    if p.pid not in earlier and p.cpu_times().user > 2.0]  # model loaded and working
            if busy:
                os.kill(busy[0].pid, signal.SIGKILL)
                killed.append(busy[0].pid)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_one)
    killer.start()
    disturbed = job(tmp_path / "disturbed")
    killer.join()
    assert killed, "no actor was busy long enough to be killed mid-run"
    assert disturbed.ok, disturbed.outcomes  # type: ignore[attr-defined]
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE
    with rasterio.open(tmp_path / "calm" / "scene" / "labels.tif") as a, \
            rasterio.open(tmp_path / "disturbed" / "scene" / "labels.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))
    assert disturbed.outcomes[0].windows == calm.outcomes[0].windows  # type: ignore[attr-defined]
