"""The ``inference`` section (numeric precision, memory layout, compilation, test-time
augmentation) and the ``evaluation`` section."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class InferenceSpec(BaseModel):
    """How actors run the model. The defaults are exact (float32, no augmentation).

    ``precision``: ``bf16`` / ``fp16`` run the forward pass under ``torch.autocast`` (GPU actors;
    CPU actors support ``bf16`` only); blending stays float32. ``channels_last``: NHWC / NDHWC
    memory layout for the model and its input (helps convolutions on recent GPUs).
    ``compile``: ``torch.compile`` the model once per actor. ``mirror_axes``: test-time
    augmentation as nnU-Net does it, every combination of flips over these spatial axes
    (0-based, in the model's axis order), logits averaged: ``[0, 1, 2]`` costs 8 passes.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False
    compile: bool = False
    mirror_axes: tuple[Annotated[int, Field(ge=0, le=2)], ...] = ()

    @field_validator("mirror_axes")
    @classmethod
    def _distinct(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"mirror_axes must not repeat an axis, got {list(value)}")
        return tuple(sorted(value))

    @property
    def flips(self) -> tuple[tuple[int, ...], ...]:
        """Every subset of ``mirror_axes`` (the empty one first): the passes of one window."""
        axes = self.mirror_axes
        return tuple(c for n in range(len(axes) + 1) for c in itertools.combinations(axes, n))


class EvaluationSpec(BaseModel):
    """Evaluate the job's outputs against reference labels when the job ends (``geoseg evaluate``).

    ``reference``: a folder of reference label maps named by item (``<item>.tif``,
    ``<item>.nii.gz``, ``<item>/labels.*``); relative to the workflow file. Writes
    ``OUT/evaluation.csv`` and ``OUT/evaluation_summary.csv|json``; see ``docs/evaluation.md``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: Path
    classes: tuple[Annotated[int, Field(ge=0)], ...] | None = None
    include_background: bool = False
    hausdorff: bool = True
