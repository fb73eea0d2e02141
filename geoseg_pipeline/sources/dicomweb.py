"""A PACS through DICOMweb: series found with QIDO-RS, their headers read with WADO-RS
metadata, their instances fetched with WADO-RS (by the worker that stages the series), and
segmentations stored back with STOW-RS.

A DICOMweb series item's path is ``dicomweb+<root>/studies/<StudyInstanceUID>#series=<uid>``
(``<root>`` the server's DICOMweb root, ``http://host:8042/dicom-web`` for Orthanc), so that the
rest of the engine treats it like a folder's series (:mod:`.dicom_series`). Credentials come from
the environment (``GEOSEG_DICOMWEB_USER`` / ``GEOSEG_DICOMWEB_PASSWORD``) or a file named by the
workflow, are passed explicitly to the workers (never read from their environment) and are never
printed: :class:`DicomWebConfig` keeps the password out of its ``repr``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SourceError
from ..formats import SERIES_MARK
from ..storage.retry import retrying
from ..storage.transient import TRANSIENT_HTTP_STATUS

PREFIX = "dicomweb+"

#: Attributes asked of QIDO-RS for every series found (besides the defaults).
SERIES_FIELDS = ("StudyDate", "Modality", "SeriesDescription", "SeriesNumber", "PatientID",
                 "NumberOfSeriesRelatedInstances")


@dataclass(frozen=True)
class DicomWebConfig:
    """A DICOMweb server: its root URL and, when it asks for them, HTTP basic credentials."""

    url: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0

    @classmethod
    def resolve(cls, url: str, credentials_file: Path | None = None,
                environ: Mapping[str, str] | None = None) -> DicomWebConfig:
        """The server at ``url`` with credentials from ``credentials_file`` (JSON ``{"user":
        ..., "password": ...}``) or else ``GEOSEG_DICOMWEB_USER`` / ``GEOSEG_DICOMWEB_PASSWORD``.

        Raises:
            SourceError: the credentials file cannot be read or lacks a user or password.
        """
        env = os.environ if environ is None else environ
        user, password = env.get("GEOSEG_DICOMWEB_USER"), env.get("GEOSEG_DICOMWEB_PASSWORD")
        if credentials_file is not None:
            try:
                doc = json.loads(Path(credentials_file).read_text(encoding="utf-8"))
                user, password = str(doc["user"]), str(doc["password"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                reason = f"no {exc} field" if isinstance(exc, KeyError) else type(exc).__name__
                raise SourceError(f"{credentials_file}: cannot read DICOMweb credentials ({reason}); expected "
                                  'JSON {"user": ..., "password": ...}') from None
        return cls(url.rstrip("/"), user, password)

    def client(self) -> Any:
        """A ``dicomweb_client.DICOMwebClient`` for the server (basic auth when configured)."""
        import requests
        from dicomweb_client.api import DICOMwebClient

        session = requests.Session()
        if self.user is not None:
            session.auth = (self.user, self.password or "")
        client = DICOMwebClient(self.url, session=session, timeout=self.timeout)
        # one retry layer, ours (_call): dicomweb-client's own retries every failed request (any
        # exception, with waits of 2 to 16 s) inside each of ours, 25 tries and minutes per call
        client.set_http_retry_params(retry=False)
        return client


def required(path: str, config: DicomWebConfig | None) -> DicomWebConfig:
    """``config``, for the DICOMweb item ``path``.

    Raises:
        SourceError: there is none (the job names no DICOMweb server).
    """
    if config is None:
        raise SourceError(f"{path}: a DICOMweb series, but the job has no DICOMweb server configured "
                          "(inputs.dicomweb)")
    return config


def from_spec(spec: Any) -> DicomWebConfig | None:
    """The configuration of a workflow's ``DicomWebSpec`` (``None`` for none): its URL, and
    credentials from its ``credentials_file`` or the environment (read here, once, by the driver).

    Raises:
        SourceError: the credentials file cannot be read.
    """
    if spec is None:
        return None
    return DicomWebConfig.resolve(spec.url, spec.credentials_file)


def is_dicomweb(path: str) -> bool:
    """Whether ``path`` names a DICOMweb series."""
    return path.startswith(PREFIX)


def series_item_path(url: str, study: str, series: str) -> str:
    """The item path of a series on the server at ``url``."""
    return f"{PREFIX}{url.rstrip('/')}/studies/{study}{SERIES_MARK}{series}"


def parse(path: str) -> tuple[str, str, str]:
    """``(root url, study uid, series uid)`` of a DICOMweb series path.

    Raises:
        SourceError: not such a path.
    """
    match = re.fullmatch(rf"{re.escape(PREFIX)}(.+)/studies/([0-9.]+){re.escape(SERIES_MARK)}([0-9.]+)", path)
    if match is None:
        raise SourceError(f"{path}: not a DICOMweb series path ({PREFIX}<root>/studies/<study>{SERIES_MARK}<series>)")
    return match.group(1), match.group(2), match.group(3)


def describe_error(exc: BaseException, url: str) -> str:
    """What went wrong talking to the server, without credentials."""
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        hint = {401: "check the credentials", 403: "the user may not do this", 404: "no such study or series"}
        return f"the DICOMweb server at {url} answered HTTP {code}" + (f" ({hint[code]})" if code in hint else "")
    if isinstance(exc, requests.ConnectionError):
        return f"cannot reach the DICOMweb server at {url}"
    if isinstance(exc, requests.Timeout):
        return f"the DICOMweb server at {url} did not answer in time"
    return f"the DICOMweb server at {url}: {type(exc).__name__}: {exc}"


#: Tries of one DICOMweb request whose failure may pass (429, 5xx, a dropped connection, a timeout).
ATTEMPTS = 5


def may_pass(exc: BaseException) -> bool:
    """Whether a failed DICOMweb request may succeed if tried again."""
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return exc.response.status_code in TRANSIENT_HTTP_STATUS
    return isinstance(exc, (requests.ConnectionError, requests.Timeout))


def _call(config: DicomWebConfig, what: str, fn: Any, *args: Any, key: str = "job", **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, tried again while it fails in a way that may pass (each retry
    counted for ``key``, an item's path or name); any failure becomes a :class:`SourceError`."""
    import requests

    try:
        return retrying(lambda: fn(*args, **kwargs), what=what, kind="dicomweb", key=key, attempts=ATTEMPTS,
                        transient=may_pass)
    except (requests.RequestException, OSError, ValueError) as exc:
        raise SourceError(f"{what}: {describe_error(exc, config.url)}") from None


class _WriteError(Exception):
    """A fetched instance could not be written: not the server's failure, never retried."""


def _value(attrs: Mapping[str, Any], tag: str) -> str:
    item = attrs.get(tag) or {}
    values = item.get("Value") or [""]
    first = values[0]
    if isinstance(first, dict):  # a person name
        return str(first.get("Alphabetic", ""))
    return str(first)


def search_series(config: DicomWebConfig, query: Mapping[str, str]) -> list[dict[str, str]]:
    """Series the server finds for ``query`` (QIDO-RS attribute filters, e.g. ``Modality``,
    ``StudyDate`` ranges ``20260101-``), each as ``{"study": ..., "series": ..., attribute: value}``.

    Raises:
        SourceError: the server cannot be reached or refuses the search.
    """
    client = config.client()
    found = _call(config, f"QIDO-RS search {dict(query)}", client.search_for_series, search_filters=dict(query),
                  fields=list(SERIES_FIELDS), get_remaining=True)
    tags = {"study": "0020000D", "series": "0020000E", "StudyDate": "00080020", "Modality": "00080060",
            "SeriesDescription": "0008103E", "SeriesNumber": "00200011", "PatientID": "00100020",
            "NumberOfSeriesRelatedInstances": "00201209"}
    return [{name: _value(attrs, tag) for name, tag in tags.items()} for attrs in found]


def series_headers(path: str, config: DicomWebConfig) -> list[tuple[str, Any]]:
    """``(instance path, header dataset)`` for every instance of a DICOMweb series, from WADO-RS
    metadata (no pixels).

    Raises:
        SourceError: the server cannot be reached, refuses, or has no such series.
    """
    from pydicom import Dataset

    url, study, series = parse(path)
    client = config.client()
    docs = _call(config, path, client.retrieve_series_metadata, study, series, key=path)
    out = []
    for doc in docs:
        ds = Dataset.from_json(doc, bulk_data_uri_handler=lambda *_: b"")
        out.append((f"{PREFIX}{url}/studies/{study}/series/{series}/instances/{ds.SOPInstanceUID}", ds))
    if not out:
        raise SourceError(f"{path}: the DICOMweb server at {url} has no instance of this series")
    return out


def series_fingerprint(path: str, config: DicomWebConfig) -> str:
    """A digest of the series' instance UIDs (a new or removed instance makes the series new).

    Raises:
        SourceError: the server cannot be reached or refuses.
    """
    uids = sorted(str(ds.SOPInstanceUID) for _, ds in series_headers(path, config))
    return f"dicomweb:{len(uids)}:" + hashlib.sha256("\n".join(uids).encode()).hexdigest()[:32]


def fetch_series(path: str, config: DicomWebConfig, folder: Path) -> Path:
    """Every instance of the series, fetched with WADO-RS into ``folder`` (one file each, named by
    SOP Instance UID, each written to a temporary name and renamed); the folder.

    Raises:
        SourceError: the server cannot be reached or refuses, or the files cannot be written.
    """
    _, study, series = parse(path)
    client = config.client()
    folder.mkdir(parents=True, exist_ok=True)

    def fetch_all() -> int:  # the instances arrive while the generator is read: a retry starts over
        count = 0
        for ds in client.iter_series(study, series):
            target = folder / f"{ds.SOPInstanceUID}.dcm"
            part = folder / f".{target.name}.part"
            try:
                ds.save_as(part, enforce_file_format=True)
                os.replace(part, target)
            except OSError as exc:
                part.unlink(missing_ok=True)
                raise _WriteError(f"{path}: cannot write the fetched instances in {folder}: {exc}") from exc
            count += 1
        return count

    try:
        count = _call(config, path, fetch_all, key=path)
    except _WriteError as exc:
        raise SourceError(str(exc)) from exc.__cause__
    if count == 0:
        raise SourceError(f"{path}: WADO-RS returned no instance")
    return folder


def store(config: DicomWebConfig, dataset_path: Path, key: str = "job") -> None:
    """Store one DICOM file on the server with STOW-RS (retries counted for ``key``, the item's name).

    Raises:
        SourceError: the server cannot be reached, or refuses or fails the instance.
    """
    import pydicom

    ds = pydicom.dcmread(dataset_path)
    client = config.client()
    response = _call(config, f"STOW-RS of {dataset_path}", client.store_instances, [ds], key=key)
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        reason = failed[0].get("FailureReason", "?")
        raise SourceError(f"STOW-RS of {dataset_path}: the DICOMweb server at {config.url} refused the instance "
                          f"(failure reason {reason})")


__all__ = [
    "PREFIX",
    "DicomWebConfig",
    "describe_error",
    "fetch_series",
    "from_spec",
    "is_dicomweb",
    "parse",
    "required",
    "search_series",
    "series_fingerprint",
    "series_headers",
    "series_item_path",
    "store",
]
