"""Typed, frozen workflow schema. Unknown keys are errors; see ``docs/workflow.md``."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .inference import InferenceSpec

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Frozen):
    """Where the items come from.

    ``paths`` are file paths or glob patterns (``**`` allowed), relative to the workflow file.
    """

    paths: Annotated[tuple[str, ...], Field(min_length=1)]
    format: Literal["auto", "geotiff", "zarr", "nifti"] = "auto"
    channel_axis: Annotated[int, Field(ge=0, le=3)] | None = Field(
        default=None, description="Volumes: the on-disk axis holding channels (3 for a 4D NIfTI)."
    )
    nodata: float | None = Field(
        default=None, description="Override the items' nodata value (use .nan for NaN)."
    )


class ModelSpec(_Frozen):
    """The segmentation model.

    ``type: builtin`` with ``name``, or ``type: torchscript`` with ``path``. ``in_channels`` and
    ``num_classes``, when given, are checked against the model before any data is read.
    """

    type: Literal["builtin", "torchscript"]
    name: str | None = None
    path: Path | None = None
    in_channels: Annotated[int, Field(ge=1)] | None = None
    num_classes: Annotated[int, Field(ge=1, le=65535)] | None = None

    @model_validator(mode="after")
    def _source(self) -> ModelSpec:
        if self.type == "builtin" and not self.name:
            raise ValueError("type 'builtin' needs 'name' (for example landcover-demo)")
        if self.type == "torchscript" and self.path is None:
            raise ValueError("type 'torchscript' needs 'path'")
        return self


class NormalizeSpec(_Frozen):
    """Per-band ``(x - mean) / std``, one entry per selected band."""

    mean: Annotated[tuple[float, ...], Field(min_length=1)]
    std: Annotated[tuple[float, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _lengths(self) -> NormalizeSpec:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} entries but std has {len(self.std)}")
        if any(s <= 0 or not math.isfinite(s) for s in self.std):
            raise ValueError(f"std must be positive and finite, got {list(self.std)}")
        return self


class IntensitySpec(_Frozen):
    """Volume intensity preparation.

    ``window``: CT window, ``clip(x, lo, hi)`` scaled to [0, 1] (MONAI ``ScaleIntensityRange``
    with ``clip=True``). ``zscore_nonzero``: MR z-score over the item's nonzero voxels, zeros
    kept at 0 (MONAI ``NormalizeIntensity(nonzero=True)``); the statistics come from one pass
    over the item, slab by slab.
    """

    mode: Literal["window", "zscore_nonzero"]
    window: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _window(self) -> IntensitySpec:
        if self.mode == "window":
            if self.window is None:
                raise ValueError("mode 'window' needs window: [low, high] (for example [-150, 250])")
            if not self.window[0] < self.window[1]:
                raise ValueError(f"window must be [low, high] with low < high, got {list(self.window)}")
        elif self.window is not None:
            raise ValueError("window goes with mode 'window' only")
        return self


class PreprocessingSpec(_Frozen):
    """Band selection (1-based, as GDAL and rasterio number bands) and normalization.

    With nothing configured, a window reaches the model as float32 of the stored values.
    """

    bands: Annotated[tuple[Annotated[int, Field(ge=1)], ...], Field(min_length=1)] | None = None
    normalize: NormalizeSpec | None = None
    intensity: IntensitySpec | None = None
    orientation: str | None = Field(
        default=None,
        description="Volumes: the model's axis codes (e.g. RAS); windows are reoriented (permuted and flipped).",
    )

    spacing: tuple[float, float, float] | None = Field(
        default=None,
        description="Volumes: the model's voxel size in mm, in the model's axis order (after orientation); "
        "windows are resampled linearly to it and the labels mapped back by nearest neighbour.",
    )

    @field_validator("spacing")
    @classmethod
    def _positive_spacing(cls, value: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if value is not None and not all(math.isfinite(v) and v > 0 for v in value):
            raise ValueError(f"spacing must be 3 positive voxel sizes in mm, got {list(value)}")
        return value

    @field_validator("orientation")
    @classmethod
    def _axcodes(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = value.upper()
        axis_of = {"L": 0, "R": 0, "A": 1, "P": 1, "S": 2, "I": 2}
        if len(code) != 3 or sorted(axis_of.get(c, -1) for c in code) != [0, 1, 2]:
            raise ValueError(f"orientation must be 3 axis codes, one of L/R, A/P, S/I each (e.g. RAS), got {value!r}")
        return code

    @model_validator(mode="after")
    def _one_normalization(self) -> PreprocessingSpec:
        if self.normalize is not None and self.intensity is not None and self.intensity.mode == "zscore_nonzero":
            raise ValueError("use either normalize (fixed mean/std) or intensity zscore_nonzero, not both")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> PreprocessingSpec:
        if self.bands is not None and self.normalize is not None and len(self.normalize.mean) != len(
            self.bands
        ):
            raise ValueError(
                f"normalize has {len(self.normalize.mean)} entries but {len(self.bands)} bands are selected"
            )
        return self


class TilingSpec(_Frozen):
    """The sliding-window grid (MONAI's) and how windows are blended."""

    roi_size: tuple[Annotated[int, Field(ge=1)], ...] = (256, 256)
    overlap: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.25
    blend: Literal["constant", "gaussian"] = "gaussian"
    sigma_scale: Annotated[float, Field(gt=0.0)] = 0.125
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 8
    block_size: Annotated[int, Field(ge=16)] | None = None

    @field_validator("roi_size", mode="before")
    @classmethod
    def _scalar_roi(cls, value: object) -> object:
        if isinstance(value, int):
            return (value, value)
        return value

    @field_validator("roi_size")
    @classmethod
    def _two_or_three_d(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(value) not in (2, 3):
            raise ValueError(
                f"roi_size needs 2 numbers (rows, cols) for rasters or 3 (i, j, k) for volumes, got {list(value)}"
            )
        return value

    @field_validator("block_size")
    @classmethod
    def _tile_multiple(cls, value: int | None) -> int | None:
        if value is not None and value % 16:
            raise ValueError(f"block_size must be a multiple of 16 (GeoTIFF tiles), got {value}")
        return value

    @property
    def spatial_dims(self) -> int:
        """2 for rasters, 3 for volumes (the length of ``roi_size``)."""
        return len(self.roi_size)

    @property
    def block_shape(self) -> tuple[int, ...]:
        """Output block shape: ``block_size`` per axis (default 512 for rasters, 128 for volumes)."""
        size = self.block_size or (512 if self.spatial_dims == 2 else 128)
        return (size,) * self.spatial_dims


class OutputSpec(_Frozen):
    """Where and what to write.

    Rasters: ``cog`` (labels.tif), ``logits`` (blended float32 logits.tif); default ``[cog]``.
    Volumes: ``nifti`` (labels.nii.gz), ``zarr`` (labels.zarr, OME-Zarr); default ``[nifti]``.
    """

    directory: Path
    formats: Annotated[tuple[Literal["cog", "logits", "nifti", "zarr"], ...], Field(min_length=1)] | None = None

    def resolved_formats(self, spatial_dims: int) -> tuple[str, ...]:
        """The formats to write for a job of ``spatial_dims`` (the default when none is set)."""
        if self.formats is not None:
            return self.formats
        return ("cog",) if spatial_dims == 2 else ("nifti",)
    overview_resampling: Literal["nearest", "mode"] = "nearest"
    compression: Literal["deflate", "lzw", "zstd"] = "deflate"


class ResourceSpec(_Frozen):
    """Ray actors: how many, and what each holds. ``workers: null`` means one per CPU slot."""

    workers: Annotated[int, Field(ge=1)] | None = None
    cpus_per_worker: Annotated[float, Field(gt=0)] = 1.0
    gpus_per_worker: Annotated[float, Field(ge=0)] = 0.0
    max_tasks_in_flight: Annotated[int, Field(ge=1)] = 2
    gdal_cache_mb: Annotated[int, Field(ge=8, le=65536)] = 64


class StatisticsSpec(_Frozen):
    """Volumes: which classes are lesion classes (connected components get counted and measured)."""

    lesion_classes: tuple[Annotated[int, Field(ge=1)], ...] = ()
    connectivity: Literal[6, 18, 26] = 26
    min_lesion_voxels: Annotated[int, Field(ge=1)] = 1


class ClassSpec(_Frozen):
    """One output class: its name and display colour (``#rrggbb``)."""

    name: Annotated[str, Field(min_length=1)]
    colour: str = "#808080"

    @field_validator("colour")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _HEX.match(value):
            raise ValueError(f"colour must look like #rrggbb, got {value!r}")
        return value.lower()


class WorkflowSpec(_Frozen):
    """A whole workflow: inputs -> model -> preprocessing -> tiling -> output."""

    version: Literal[1] = 1
    name: str = "workflow"
    inputs: InputSpec
    model: ModelSpec
    preprocessing: PreprocessingSpec = PreprocessingSpec()
    tiling: TilingSpec = TilingSpec()
    output: OutputSpec
    resources: ResourceSpec = ResourceSpec()
    statistics: StatisticsSpec = StatisticsSpec()
    inference: InferenceSpec = InferenceSpec()
    classes: tuple[ClassSpec, ...] | None = None

    @model_validator(mode="after")
    def _cross_checks(self) -> WorkflowSpec:
        problems = cross_check(self.model, self.preprocessing, self.tiling, self.classes, self.output,
                               self.inference)
        if problems:
            raise ValueError("; ".join(f"{path}: {msg}" for path, msg in problems))
        return self


def cross_check(
    model: ModelSpec | None,
    preprocessing: PreprocessingSpec | None,
    tiling: TilingSpec | None,
    classes: tuple[ClassSpec, ...] | None,
    output: OutputSpec | None = None,
    inference: InferenceSpec | None = None,
) -> list[tuple[str, str]]:
    """Problems between sections, as ``(field path, message)``; sections that did not validate
    on their own are passed as ``None`` and skipped."""
    problems: list[tuple[str, str]] = []
    if classes is not None:
        names = [c.name for c in classes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(("classes", f"duplicate names {dupes}"))
        if model is not None and model.num_classes is not None and model.num_classes != len(classes):
            problems.append(
                ("model.num_classes", f"is {model.num_classes} but {len(classes)} classes are listed")
            )
    if (
        model is not None
        and model.in_channels is not None
        and preprocessing is not None
        and preprocessing.bands is not None
        and len(preprocessing.bands) != model.in_channels
    ):
        problems.append((
            "preprocessing.bands",
            f"selects {len(preprocessing.bands)} bands but model.in_channels is {model.in_channels}",
        ))
    if tiling is not None and tiling.spatial_dims == 2 and preprocessing is not None:
        for name in ("orientation", "spacing", "intensity"):
            if getattr(preprocessing, name) is not None:
                problems.append((f"preprocessing.{name}", "applies to volumes only (tiling.roi_size has 2 numbers)"))
    if tiling is not None and output is not None and output.formats is not None:
        allowed = ("cog", "logits") if tiling.spatial_dims == 2 else ("nifti", "zarr")
        kind = "rasters" if tiling.spatial_dims == 2 else "volumes"
        for i, fmt in enumerate(output.formats):
            if fmt not in allowed:
                problems.append((f"output.formats[{i}]", f"{fmt!r} is not an output of {kind}; use {list(allowed)}"))
    if tiling is not None and inference is not None and any(a >= tiling.spatial_dims for a in inference.mirror_axes):
        problems.append(("inference.mirror_axes",
                         f"{list(inference.mirror_axes)} names an axis beyond the roi's {tiling.spatial_dims} dims"))
    if tiling is not None and tiling.block_shape[0] < max(tiling.roi_size):
        problems.append((
            "tiling.block_size",
            f"must be at least the roi size ({max(tiling.roi_size)}), got {tiling.block_shape[0]}",
        ))
    return problems
