"""Local files the job's user may not read or write, with ``geoseg predict`` run as the
unprivileged user ``nobody`` (root reads and writes everything, so the tests switch user).

The files live in a folder of their own under ``/tmp`` (pytest's ``tmp_path`` may be closed to
other users). The CLI runs under this venv's packages; when ``nobody`` cannot execute this
venv's interpreter (a venv made from a Python under ``/root``), under a system Python of the
same version with this venv's packages layered on it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geoseg_pipeline.api import ledger_rows

NOBODY = 65534
pytestmark = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="switching to the user nobody needs root (and as another user, a chmod 000 file is unreadable "
    "to the tests' own user too)",
)


@dataclass(frozen=True)
class Sandbox:
    """A folder ``nobody`` may use, the Python to run the CLI with, and its environment."""

    root: Path
    python: str
    env: dict[str, str]

    def geoseg(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``geoseg --no-progress ARGS`` as ``nobody``."""
        return _as_nobody([self.python, "-m", "geoseg_pipeline.cli", "--no-progress", *args], self.env, self.root)


def _as_nobody(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, user=NOBODY, group=NOBODY, extra_groups=[], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _runs_the_cli(python: str, env: dict[str, str], cwd: Path) -> bool:
    try:
        probe = _as_nobody([python, "-c", "import geoseg_pipeline.cli, ray, torch, rasterio"], env, cwd)
    except OSError:  # the interpreter itself cannot be executed
        return False
    return probe.returncode == 0


def _python_for_nobody(root: Path, env: dict[str, str]) -> str:
    """This venv's interpreter if ``nobody`` can run it, else an overlay venv: a system Python
    of the same version, with a ``.pth`` file that adds this venv's site-packages."""
    if _runs_the_cli(sys.executable, env, root):
        return sys.executable
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    site_packages = sysconfig.get_paths()["purelib"]
    for base in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if not os.path.isfile(base):
            continue
        venv = root / f"venv-{Path(base).parent.parent.name}"
        subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
        (venv / "lib" / f"python{version}" / "site-packages" / "geoseg_overlay.pth").write_text(
            f"import site; site.addsitedir({site_packages!r})\n")
        subprocess.run(["chmod", "-R", "a+rX", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        if _runs_the_cli(python, env, root):
            return python
    pytest.fail(f"the user nobody can run neither {sys.executable} nor a system Python {version} with this "
                f"venv's packages ({site_packages}): make them readable to other users")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    root = Path(tempfile.mkdtemp(prefix="geoseg-perm-", dir="/tmp"))
    try:
        root.chmod(0o777)
        for name in ("home", "tmp"):
            (root / name).mkdir()
            os.chown(root / name, NOBODY, NOBODY)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "VIRTUAL_ENV", "PYTHON"))}
        # Ray's session files (sockets: keep the path short) and everything else under the sandbox
        env.update(HOME=str(root / "home"), TMPDIR=str(root / "tmp"), RAY_TMPDIR=str(root / "tmp"),
                   PYTHONNOUSERSITE="1")
        yield Sandbox(root, _python_for_nobody(root, env), env)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def case_dir(sandbox: Sandbox) -> Path:
    """A folder of the sandbox for one test, writable by everyone."""
    path = Path(tempfile.mkdtemp(prefix="case-", dir=sandbox.root))
    path.chmod(0o777)
    return path


def _scene(path: Path, seed: int, rows: int = 70, cols: int = 90) -> Path:
    data = np.random.default_rng(seed).integers(1, 255, (3, rows, cols)).astype("uint8")
    with rasterio.open(path, "w", driver="GTiff", width=cols, height=rows, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 5200000, 10, 10)) as dst:
        dst.write(data)
    path.chmod(0o644)
    return path


def _model(case: Path, conv_model: Callable[..., Path]) -> Path:
    model = case / "model.pt"
    shutil.copy(conv_model(in_channels=3, classes=3), model)
    model.chmod(0o644)
    return model


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("geoseg: ")]


@pytest.mark.slow  # starts a Ray of its own, as nobody
def test_an_unreadable_input_fails_alone_and_is_recorded(
    sandbox: Sandbox, case_dir: Path, conv_model: Callable[..., Path]
) -> None:
    a, b, c = (_scene(case_dir / f"{n}.tif", i) for i, n in enumerate("abc"))
    b.chmod(0o000)
    out = case_dir / "out"
    run = sandbox.geoseg("predict", str(a), str(b), str(c), "--model", str(_model(case_dir, conv_model)),
                         "--out", str(out), "--roi-size", "64", "--workers", "1")

    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert "2 item(s) done, 1 failed" in run.stdout
    failed = [line for line in run.stdout.splitlines() if line.strip().startswith("FAILED")]
    assert len(failed) == 1 and failed[0].strip().startswith("FAILED b: ")
    assert str(b) in failed[0] and "permission denied" in failed[0].lower()
    for name in ("a", "c"):
        with rasterio.open(out / name / "labels.tif") as ds:
            assert ds.shape == (70, 90)
    assert not (out / "b").exists()

    rows = {r.item: r for r in ledger_rows(out)}
    assert {n: r.status for n, r in rows.items()} == {"a": "ok", "b": "failed", "c": "ok"}
    assert str(b) in rows["b"].error and "permission denied" in rows["b"].error.lower()


def test_an_output_directory_that_is_not_writable(
    sandbox: Sandbox, case_dir: Path, conv_model: Callable[..., Path]
) -> None:
    scene = _scene(case_dir / "a.tif", 0)
    out = case_dir / "readonly"
    out.mkdir(mode=0o755)  # root's: nobody cannot write into it
    run = sandbox.geoseg("predict", str(scene), "--model", str(_model(case_dir, conv_model)), "--out", str(out),
                         "--roi-size", "64")

    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr
    errors = _error_lines(run.stderr)
    assert len(errors) == 1 and str(out) in errors[0], run.stderr
    assert "permission denied" in errors[0].lower()
    assert list(out.iterdir()) == []


def test_an_output_directory_that_cannot_be_created(
    sandbox: Sandbox, case_dir: Path, conv_model: Callable[..., Path]
) -> None:
    scene = _scene(case_dir / "a.tif", 0)
    parent = case_dir / "locked"
    parent.mkdir(mode=0o755)
    out = parent / "out"
    run = sandbox.geoseg("predict", str(scene), "--model", str(_model(case_dir, conv_model)), "--out", str(out),
                         "--roi-size", "64")

    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr
    errors = _error_lines(run.stderr)
    assert len(errors) == 1 and str(out) in errors[0], run.stderr
    assert "permission denied" in errors[0].lower()
