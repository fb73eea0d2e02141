"""The workflow's classes: names, display colours and DICOM codes."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

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
    codes (default: SNOMED CT "Tissue").

    For a text-prompted model (CLIPSeg), ``prompt`` is the text that finds the class, or
    ``threshold`` makes the class the background: the class of a pixel whose every prompt's
    probability is below it (see :mod:`geoseg_pipeline.spec.prompts`).
    """

    name: Annotated[str, Field(min_length=1)]
    colour: str | None = None  # None: a distinct palette colour (sinks.legend.default_colours)
    dicom: DicomClassCodes | None = None
    prompt: str | None = None
    threshold: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None

    @field_validator("prompt")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(f"prompt must be a text (for example 'water'), got {value!r}")
        return value

    @model_validator(mode="after")
    def _prompt_or_threshold(self) -> ClassSpec:
        if self.prompt is not None and self.threshold is not None:
            raise ValueError(f"class {self.name!r}: give a prompt (a class the model finds) or a threshold (the "
                             "background), not both")
        return self

    @field_validator("colour")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not _HEX.match(value):
            raise ValueError(f"colour must look like #rrggbb, got {value!r}")
        return None if value is None else value.lower()
