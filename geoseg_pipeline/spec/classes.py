"""The workflow's classes: names, display colours and DICOM codes."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator

from .base import Frozen

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


class DicomCode(Frozen):
    """A coded concept: coding scheme (``SCT`` for SNOMED CT), code value and meaning."""

    scheme: Annotated[str, Field(min_length=1, max_length=16)]
    value: Annotated[str, Field(min_length=1, max_length=64)]
    meaning: Annotated[str, Field(min_length=1, max_length=64)]


class DicomClassCodes(Frozen):
    """What a class is in DICOM terms (a DICOM SEG segment's property category and type), e.g.
    category ``SCT 123037004 Anatomical Structure``, type ``SCT 10200004 Liver``."""

    category: DicomCode
    type: DicomCode


class ClassSpec(Frozen):
    """One output class: its name, display colour (``#rrggbb``) and, for DICOM SEG outputs, its
    codes (default: SNOMED CT "Tissue")."""

    name: Annotated[str, Field(min_length=1)]
    colour: str | None = None  # None: a distinct palette colour (sinks.legend.default_colours)
    dicom: DicomClassCodes | None = None

    @field_validator("colour")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not _HEX.match(value):
            raise ValueError(f"colour must look like #rrggbb, got {value!r}")
        return None if value is None else value.lower()
