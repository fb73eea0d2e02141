"""A real PACS for the tests: Orthanc with its DICOMweb plugin (Debian packages ``orthanc`` and
``orthanc-dicomweb``, installed by ``scripts/system-deps.sh``), started on a loopback port with a
configuration of its own (storage in a temporary folder, HTTP basic authentication, no DICOM
port), stopped afterwards. A missing Orthanc is a failure, not a skip."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

PLUGINS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")


@dataclass(frozen=True)
class Pacs:
    """A running Orthanc: its REST root, its DICOMweb root, and the user allowed in."""

    url: str
    dicomweb: str
    user: str
    password: str

    @property
    def auth(self) -> tuple[str, str]:
        return self.user, self.password


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def orthanc(folder: Path, user: str = "geoseg", password: str = "s3cret-pacs") -> Iterator[Pacs]:
    """Start Orthanc in ``folder``; yield it once its REST API answers; stop it."""
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not os.path.exists(binary):
        raise RuntimeError("Orthanc is not installed: run scripts/system-deps.sh (Debian packages orthanc, "
                           "orthanc-dicomweb)")
    plugin = next((str(Path(p) / "libOrthancDicomWeb.so") for p in PLUGINS
                   if (Path(p) / "libOrthancDicomWeb.so").exists()), None)
    if plugin is None:
        raise RuntimeError("Orthanc's DICOMweb plugin is not installed (Debian package orthanc-dicomweb)")
    port = _port()
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "geoseg-test-pacs",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {user: password},
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False,
                     "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
        "StableAge": 1,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 -- closed below, after the process
    proc = subprocess.Popen([binary, str(path)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                log_text = (folder / "orthanc.log").read_text()[-2000:]
                raise RuntimeError(f"Orthanc exited ({proc.returncode}): {log_text}")
            try:
                if requests.get(f"{url}/system", auth=(user, password), timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not answer on {url} within 30 s")
            time.sleep(0.2)
        yield Pacs(url, f"{url}/dicom-web", user, password)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def upload(pacs: Pacs, files: list[Path]) -> None:
    """Store ``files`` in the PACS through its REST API (as a modality's C-STORE would)."""
    for f in files:
        r = requests.post(f"{pacs.url}/instances", data=f.read_bytes(), auth=pacs.auth, timeout=30)
        r.raise_for_status()
