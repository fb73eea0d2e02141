"""Open items: a raster (:mod:`.raster`) or a volume (:mod:`.volume`), both behind
:class:`~.base.OpenItem`; the driver schedules them alike."""

from __future__ import annotations

from ..sinks import ClassLegend
from ..sources import SourceOptions, open_source, probe_channels
from ..sources.discovery import Item
from ..spec import WorkflowSpec
from ..statistics import ItemZones
from ..storage import S3Config
from ..tasks import ModelInfo
from .base import OpenItem, item_format, named_bands
from .raster import RasterItem
from .volume import RESAMPLE_SLAB, VolumeItem


def open_item(item: Item, spec: WorkflowSpec, info: ModelInfo, legend: ClassLegend,
              s3: S3Config | None = None, provenance: dict[str, str] | None = None,
              zones: ItemZones | None = None) -> OpenItem:
    """Open ``item`` as the workflow's kind: a raster for a 2D roi, a volume for a 3D roi.
    ``provenance`` (``model_version``: the model's hash) goes into outputs that record it;
    ``zones`` (``statistics.zones``) are counted for rasters."""
    if spec.model.type == "nnunet":
        from .nnunet import NnunetItem

        return NnunetItem(item, spec, info, legend, s3, provenance)
    if spec.tiling.kind == "volume":
        return VolumeItem(item, spec, info, legend, s3, provenance)
    return RasterItem(item, spec, info, legend, s3, zones, provenance)


def channel_count(item: Item, spec: WorkflowSpec, s3: S3Config | None = None) -> int:
    """Bands (or channels) of ``item``, from its metadata."""
    options = SourceOptions(s3=s3, channel_axis=spec.inputs.channel_axis, stac=item.stac)
    if spec.inputs.variables is not None:  # the bands a datacube's named variables give
        src = open_source(item_format(item, spec), item.path, options)
        try:
            return len(named_bands(src, spec) or ())
        finally:
            src.close()
    return probe_channels(item_format(item, spec), item.path, options)


__all__ = ["RESAMPLE_SLAB", "OpenItem", "RasterItem", "VolumeItem", "channel_count", "item_format", "open_item"]
