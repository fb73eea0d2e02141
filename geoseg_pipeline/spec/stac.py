"""The workflow's STAC inputs: which catalog, which assets as the model's bands, on which grid,
which items (filters), and the quality mask. See ``docs/stac.md``."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import Frozen

#: GDAL resamplings a coarser (or finer) asset may be brought onto the output grid with.
RESAMPLINGS = ("bilinear", "nearest", "cubic", "average")

#: ``KEY`` or ``KEY:BAND`` (a 1-based band of a multi-band asset, e.g. ``visual:1``).
_ASSET_REF = re.compile(r"^(?P<key>[^\s:][^:]*?)(?::(?P<band>[1-9][0-9]*))?$")


def split_asset(ref: str) -> tuple[str, int]:
    """``"B04"`` -> ``("B04", 1)``; ``"visual:2"`` -> ``("visual", 2)``.

    Raises:
        ValueError: not ``KEY`` or ``KEY:BAND``.
    """
    m = _ASSET_REF.match(ref)
    if m is None:
        raise ValueError(f"{ref!r} is not an asset key (KEY, or KEY:BAND for a band of a multi-band asset)")
    return m.group("key"), int(m.group("band") or 1)


def parse_interval(text: str) -> tuple[datetime | None, datetime | None]:
    """A STAC datetime filter: one instant (``2024-06-01``, ``2024-06-01T10:00:00Z``) or an
    interval ``START/END`` with ``..`` (or nothing) for an open end. A date alone is the whole
    day (its end: the next midnight, exclusive). Naive times are UTC.

    Raises:
        ValueError: a part is not an ISO 8601 date or time, or the interval ends before it starts.
    """
    def one(part: str, end: bool) -> datetime | None:
        part = part.strip()
        if part in ("", ".."):
            return None
        try:
            value = datetime.fromisoformat(part.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"{part!r} is not an ISO 8601 date or date-time") from exc
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if end and len(part) == 10:  # a date: up to the end of that day
            value += timedelta(days=1) - timedelta(microseconds=1)
        return value

    if "/" in text:
        start_text, _, end_text = text.partition("/")
        start, stop = one(start_text, False), one(end_text, True)
    else:
        start, stop = one(text, False), one(text, True)
        if stop is not None and len(text.strip()) > 10:
            stop = start
    if start is None and stop is None:
        raise ValueError(f"{text!r}: an interval needs at least one end")
    if start is not None and stop is not None and stop < start:
        raise ValueError(f"{text!r}: the interval ends before it starts")
    return start, stop


class MaskSpec(Frozen):
    """A quality band that says which pixels to leave out (clouds, shadow, snow, no data):
    ``asset`` (an asset key of every item), and either ``invalid`` (its class values, e.g.
    Sentinel-2 SCL ``[0, 1, 3, 8, 9, 10]``) or ``bits`` (bit positions whose flag marks a pixel
    invalid, Landsat QA_PIXEL ``[1, 3, 4]``: dilated cloud, cloud, cloud shadow). The mask is
    brought onto the output grid with ``nearest``; masked pixels are nodata for the model, the
    label map and the statistics."""

    asset: str
    invalid: tuple[Annotated[int, Field(ge=0)], ...] | None = None
    bits: tuple[Annotated[int, Field(ge=0, le=63)], ...] | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> MaskSpec:
        if (self.invalid is None) == (self.bits is None):
            raise ValueError("give either invalid (class values) or bits (bit flags), not both or neither")
        chosen = self.invalid if self.invalid is not None else self.bits
        if not chosen:
            raise ValueError("the list of invalid values (or bits) is empty: nothing would be masked")
        split_asset(self.asset)
        return self


class StacSpec(Frozen):
    """Items from STAC documents, their bands from separate assets.

    ``catalog``: one or more STAC documents (a static catalog or collection, followed through
    its links; an ItemCollection or search-result JSON; a single item; a STAC-GeoParquet file),
    local paths or ``s3://`` URIs. ``assets``: the asset keys in the model's channel order
    (``KEY:BAND`` for a band of a multi-band asset). ``grid``: the output grid: ``finest`` (the
    listed asset with the smallest pixel), an asset key, or a pixel size in the item's CRS units.
    ``resampling``: how assets on another grid are brought onto it (GDAL's warper, window by
    window). ``scale_offset``: apply each asset's ``raster:bands`` scale and offset (values become
    float32). Filters: ``datetime`` (an instant or ``START/END``, ``..`` for an open end),
    ``bbox`` (west, south, east, north in degrees), ``intersects`` (a GeoJSON geometry in
    EPSG:4326), ``max_cloud_cover`` (``eo:cloud_cover``, percent), ``properties`` (equal
    values)."""

    catalog: tuple[str, ...]
    assets: tuple[str, ...] = Field(min_length=1)
    grid: str | float = "finest"
    resampling: Literal["bilinear", "nearest", "cubic", "average"] = "bilinear"
    scale_offset: bool = False
    datetime: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    intersects: dict[str, Any] | None = None
    max_cloud_cover: Annotated[float, Field(ge=0, le=100)] | None = None
    properties: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("catalog", mode="before")
    @classmethod
    def _one_or_more(cls, value: object) -> object:
        if isinstance(value, str):
            value = (value,)
        if isinstance(value, list | tuple) and (not value or any(not str(v).strip() for v in value)):
            raise ValueError("names no STAC document: give a catalog, collection, item collection, item or "
                             "STAC-GeoParquet file")
        return value

    @field_validator("assets")
    @classmethod
    def _asset_refs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for ref in value:
            split_asset(ref)
        dupes = sorted({r for r in value if value.count(r) > 1})
        if dupes:
            raise ValueError(f"lists {dupes} more than once")
        return value

    @field_validator("grid")
    @classmethod
    def _grid(cls, value: str | float) -> str | float:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must be finest, an asset key or a pixel size")
        if isinstance(value, float | int) and not (math.isfinite(value) and value > 0):
            raise ValueError(f"a pixel size must be positive, got {value}")
        return value

    @field_validator("datetime")
    @classmethod
    def _interval(cls, value: str | None) -> str | None:
        if value is not None:
            parse_interval(value)
        return value

    @field_validator("bbox", mode="before")
    @classmethod
    def _four_numbers(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)) and len(value) != 4:
            raise ValueError(f"must be four numbers [west, south, east, north] in degrees, got {len(value)}: "
                             f"{list(value)}")
        return value

    @field_validator("bbox")
    @classmethod
    def _lonlat(cls, value: tuple[float, float, float, float] | None) -> tuple[float, float, float, float] | None:
        if value is not None:
            west, south, east, north = value
            if not (-90 <= south <= north <= 90 and -180 <= west <= 180 and -180 <= east <= 180):
                raise ValueError(f"must be [west, south, east, north] in degrees, got {list(value)}")
            try:
                import shapely  # noqa: F401  (the filter compares item footprints with it)
            except ImportError as exc:
                raise ValueError("needs shapely: pip install 'geoseg-pipeline[stac]'") from exc
        return value

    @field_validator("intersects")
    @classmethod
    def _geometry(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                from shapely.geometry import shape
            except ImportError as exc:
                raise ValueError("needs shapely: pip install 'geoseg-pipeline[stac]'") from exc
            try:
                geom = shape(value)
            except Exception as exc:  # shapely raises several types for bad GeoJSON
                raise ValueError(f"is not a GeoJSON geometry: {exc}") from exc
            if geom.is_empty:
                raise ValueError("is an empty geometry")
        return value

    @property
    def grid_asset(self) -> str | None:
        """The asset key whose grid is the output grid (``None``: finest, or a pixel size)."""
        return self.grid if isinstance(self.grid, str) and self.grid != "finest" else None

    @property
    def resolution(self) -> float | None:
        """The output pixel size when ``grid`` gives one."""
        return float(self.grid) if isinstance(self.grid, float | int) else None


__all__ = ["RESAMPLINGS", "MaskSpec", "StacSpec", "parse_interval", "split_asset"]
