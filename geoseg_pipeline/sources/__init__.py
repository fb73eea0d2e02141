"""Readers for input items, one per format behind the :class:`RasterSource` protocol."""

from .base import RasterSource, open_raster_source
from .rasterio_source import RasterioSource
from .zarr_source import ZarrRasterSource

__all__ = ["RasterSource", "RasterioSource", "ZarrRasterSource", "open_raster_source"]
