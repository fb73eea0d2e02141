"""What a job writes: the output section (formats, folder, compression) and the statistics
section."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from ..formats import OUTPUT_NAMES, outputs_for
from ..storage.uri import local_path, staging_dir_for, uri_scheme
from .base import DicomWebSpec, Frozen

_UNIT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(px|pixels?|m2|m²|ha)?\s*$")


class MappingUnit(Frozen):
    """A minimum mapping unit: ``value`` in ``unit`` (``px``, ``m2`` or ``ha``)."""

    value: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    unit: Literal["px", "m2", "ha"] = "px"

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, bool):
            raise ValueError(f"give pixels (25) or an area (\"5000 m2\", \"0.5 ha\"), got {data!r}")
        if isinstance(data, int | float):
            return {"value": data}
        if isinstance(data, str):
            match = _UNIT.match(data)
            if match is None:
                raise ValueError(f"give pixels (25) or an area (\"5000 m2\", \"0.5 ha\"), got {data!r}")
            unit = {"pixel": "px", "pixels": "px", "m²": "m2", None: "px"}.get(match.group(2), match.group(2))
            return {"value": float(match.group(1)), "unit": unit}
        return data


def _output_name(value: str) -> str:
    if value not in OUTPUT_NAMES:
        raise ValueError(f"unknown output format, got {value!r}; use one of {list(OUTPUT_NAMES)}")
    return value


#: A name of :data:`geoseg_pipeline.formats.OUTPUTS`.
_OutputName = Annotated[str, AfterValidator(_output_name)]


class OutputSpec(Frozen):
    """Where and what to write.

    ``formats`` name records of :data:`geoseg_pipeline.formats.OUTPUTS`. Rasters: ``cog``
    (labels.tif), ``logits`` (blended float32 logits.tif), ``geoparquet`` (labels.parquet) and
    ``gpkg`` (labels.gpkg), one polygon per connected region; default ``[cog]``. Volumes: ``nifti``
    (labels.nii.gz), ``zarr`` (labels.zarr, OME-Zarr); default ``[nifti]``.
    """

    directory: Path
    """Where outputs are written. Given as ``s3://bucket/prefix``, it becomes a local staging
    folder (under ``staging``) from which each finished item is published to ``remote``."""
    formats: Annotated[tuple[_OutputName, ...], Field(min_length=1)] | None = None
    remote: str | None = None
    """``s3://bucket/prefix`` when the outputs go to an object store (set from ``directory``)."""
    staging: Path = Path("~/.cache/geoseg/outputs")
    """Local staging folders of ``s3://`` output directories (one per URI, kept between runs)."""
    identifiers: bool = True
    """DICOM inputs: the patient and study identifiers (PatientID, StudyInstanceUID, StudyDate) in
    ``stats.json``, the reports, the cohort tables and the ledger; ``false`` leaves them out
    everywhere (Modality and SeriesDescription stay)."""
    dicomweb: DicomWebSpec | None = None
    """Store each item's DICOM SEG on this DICOMweb server (STOW-RS) once the item is complete."""

    @model_validator(mode="before")
    @classmethod
    def _object_store(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("directory"), str):
            return data
        uri = data["directory"]
        scheme = uri_scheme(uri)
        if scheme is None:
            return data
        if scheme == "file":  # a local folder: as a Path, file:///a/b would be the folder "file:/a/b"
            return {**data, "directory": local_path(uri)}
        if scheme != "s3" or not uri[5:].strip("/"):
            raise ValueError(f"directory {uri!r}: outputs go to a local path or s3://bucket/prefix")

        base = Path(data.get("staging") or cls.model_fields["staging"].default).expanduser()
        return {**data, "remote": uri.rstrip("/"), "directory": staging_dir_for(uri, base), "staging": base}

    @model_validator(mode="after")
    def _stow_needs_a_seg(self) -> OutputSpec:
        if self.dicomweb is not None and "dicom-seg" not in (self.formats or ()):
            raise ValueError("dicomweb stores each item's DICOM SEG: add dicom-seg to formats")
        return self

    @field_validator("formats")
    @classmethod
    def _once_each(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"{list(value)} names a format twice")
        return value

    def resolved_formats(self, spatial_dims: int) -> tuple[str, ...]:
        """The formats to write for a job of ``spatial_dims`` (the default when none is set)."""
        if self.formats is not None:
            return self.formats
        return tuple(o.name for o in outputs_for("volume" if spatial_dims == 3 else "raster"))
    overview_resampling: Literal["nearest", "mode"] = "nearest"
    compression: Literal["deflate", "lzw", "zstd"] = "deflate"
    connectivity: Literal[4, 8] = 4
    """Polygon outputs: a region is pixels of one class joined through edges (4) or also through
    corners (8), as GDAL's polygonize and sieve take it."""
    min_mapping_unit: MappingUnit | None = None
    """Rasters: regions smaller than this are removed from the label map, its polygons and its
    statistics, as ``gdal_sieve.py`` removes them (each takes the class of its largest
    neighbouring region): pixels (``25``, ``"25 px"``) or an area (``"5000 m2"``, ``"0.5 ha"``)."""
    simplify: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    """Polygon outputs: simplify each polygon with this tolerance, in CRS units (0: not at all);
    the label map and the statistics are not changed."""
    stac: bool | None = None
    """Rasters: describe the outputs as a static STAC catalog (``OUT/<item>/item.json`` for each
    label map, ``OUT/collection.json`` for the job); default: when the inputs are STAC items."""



class ZonesSpec(Frozen):
    """Zones for class areas per zone (rasters): a polygon layer any OGR driver reads (GeoPackage,
    Shapefile, GeoJSON, FlatGeobuf, ...), in any CRS, and the field that names each zone."""

    path: Path
    id_field: Annotated[str, Field(min_length=1)]
    layer: str | None = None
    """The layer of a file that holds several (default: its only layer)."""


class StatisticsSpec(Frozen):
    """Volumes: which classes are lesion classes (connected components get counted and measured).
    Rasters: ``zones``, class areas per zone (``OUT/<item>/zones.csv``, ``OUT/zones_summary.csv``)."""

    lesion_classes: tuple[Annotated[int, Field(ge=1)], ...] = ()
    connectivity: Literal[6, 18, 26] = 26
    min_lesion_voxels: Annotated[int, Field(ge=1)] = 1
    zones: ZonesSpec | None = None
