"""Readers for input items, one per format (see :mod:`geoseg_pipeline.formats`) behind the
:class:`RasterSource` and :class:`VolumeSource` protocols."""

from .base import (
    RasterSource,
    Source,
    SourceOptions,
    VolumeSource,
    open_item_source,
    open_metadata,
    open_raster_source,
    open_source,
    open_volume_source,
    probe_channels,
    stage_item,
)
from .nifti_source import NiftiSource
from .rasterio_source import RasterioSource
from .zarr_source import ZarrRasterSource
from .zarr_volume import ZarrVolumeSource

__all__ = ["NiftiSource", "RasterSource", "RasterioSource", "Source", "SourceOptions", "VolumeSource",
           "ZarrRasterSource", "ZarrVolumeSource", "open_item_source", "open_metadata", "open_raster_source",
           "open_source", "open_volume_source", "probe_channels", "stage_item"]
