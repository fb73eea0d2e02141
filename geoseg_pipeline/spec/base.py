"""What every section of the workflow spec shares: frozen models that refuse unknown keys, and
the DICOMweb server section that inputs and outputs both use."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Frozen(BaseModel):
    """A spec section: immutable, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DicomWebSpec(Frozen):
    """A DICOMweb server (a PACS): its root URL (``http://host:8042/dicom-web`` for Orthanc) and,
    for inputs, the QIDO-RS filters that find the series (``Modality: CT``, ``StudyDate:
    20260101-``, ``SeriesDescription: "*AX*"``). Credentials: ``credentials_file`` (JSON with
    ``user`` and ``password``), else the environment's ``GEOSEG_DICOMWEB_USER`` /
    ``GEOSEG_DICOMWEB_PASSWORD``; never written anywhere."""

    url: str
    query: dict[str, str] = Field(default_factory=dict)
    credentials_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"url must be an http:// or https:// DICOMweb root, got {value!r}")
        return value.rstrip("/")
